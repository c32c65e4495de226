/**
 * A torn tail of the audit log: what a crash in the middle of an append leaves
 * behind (a last line without its newline, or a last line whose content does
 * not match its hash). Opening the log moves it into a side file next to the
 * log, `audit.log.torn-<time>`, so the chain continues from the last complete
 * entry and nothing that was on disk is lost.
 */
import { createHash } from 'node:crypto'
import { open, readdir, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { NarthexError } from '../errors.js'

/** The hash `prev` of the first entry: there is nothing before it. */
export const GENESIS = '0'.repeat(64)

/** The hash of an entry: SHA-256 over the JSON of everything but `hash`. */
export function entryHash(body: object): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('hex')
}

/** A torn tail moved out of the log. */
export interface TornTail {
  /** The side file it was moved to. */
  readonly file: string
  readonly bytes: number
  /** Why it counts as torn. */
  readonly reason: string
}

/** Where the chain goes on after opening: the last complete entry's number and hash. */
export interface ChainHead {
  readonly seq: number
  readonly hash: string
}

const SIDE_FILE_MARK = '.torn-'
// Entries are a few hundred bytes; the last two always fit.
const WINDOW_BYTES = 1 << 20

interface Parsed {
  readonly seq: number
  readonly hash: string
  /** The content matches the hash. */
  readonly intact: boolean
}

function parseLine(bytes: Buffer): Parsed | undefined {
  try {
    const entry = JSON.parse(bytes.toString('utf8')) as { seq?: unknown; hash?: unknown }
    if (typeof entry.seq !== 'number' || typeof entry.hash !== 'string') return undefined
    const { hash, ...body } = entry
    return { seq: entry.seq, hash, intact: entryHash(body) === hash }
  } catch {
    return undefined
  }
}

/**
 * Finds the last complete entry of the log at `path`, moving a torn last line
 * into a side file first (written and synced before the log is truncated and
 * synced, so a crash in between leaves the bytes in both places, never in none).
 * Only the last line can be torn: a broken line before it is left in place for
 * `narthex audit --verify` to report.
 * @throws NarthexError STORE_IO when the file cannot be read or repaired.
 */
export async function repairTornTail(path: string): Promise<{ head: ChainHead | undefined; torn: TornTail | undefined }> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { head: undefined, torn: undefined }
    throw new NarthexError('STORE_IO', `cannot read the audit log ${path}`, { cause: err })
  }
  if (size === 0) return { head: undefined, torn: undefined }
  const fh = await open(path, 'r+')
  try {
    const start = Math.max(0, size - WINDOW_BYTES)
    const buf = Buffer.alloc(size - start)
    await fh.read(buf, 0, buf.length, start)
    let cut: number | undefined
    let reason = ''
    if (buf[buf.length - 1] !== 0x0a) {
      cut = buf.lastIndexOf(0x0a) + 1
      if (cut === 0 && start > 0) throw new NarthexError('STORE_IO', `the last line of the audit log ${path} is longer than ${WINDOW_BYTES} bytes`)
      reason = 'the last line is incomplete (no final newline)'
    }
    const completeEnd = cut ?? buf.length
    let head: ChainHead | undefined
    if (completeEnd > 0) {
      const lastStart = completeEnd >= 2 ? buf.lastIndexOf(0x0a, completeEnd - 2) + 1 : 0
      const last = parseLine(buf.subarray(lastStart, completeEnd - 1))
      const prevStart = lastStart >= 2 ? buf.lastIndexOf(0x0a, lastStart - 2) + 1 : -1
      const prev = prevStart >= 0 ? parseLine(buf.subarray(prevStart, lastStart - 1)) : undefined
      const isFirstLine = start === 0 && lastStart === 0
      if (last?.intact) head = last
      else if (cut === undefined && (isFirstLine || prev?.intact)) {
        // A complete last line that is not a valid entry, after a valid one: torn too.
        cut = lastStart
        reason = last ? 'the last line does not match its hash' : 'the last line is not a JSON entry'
        head = prev
      } else head = last ?? prev
    }
    if (cut === undefined) return { head, torn: undefined }
    const tail = buf.subarray(cut)
    const file = await writeSideFile(path, tail)
    await fh.truncate(start + cut)
    await fh.sync()
    return { head, torn: { file, bytes: tail.length, reason } }
  } finally {
    await fh.close()
  }
}

async function writeSideFile(path: string, bytes: Buffer): Promise<string> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  for (let n = 0; ; n++) {
    const file = `${path}${SIDE_FILE_MARK}${stamp}${n ? `-${n}` : ''}`
    let fh
    try {
      fh = await open(file, 'wx', 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
      throw new NarthexError('STORE_IO', `cannot set aside the torn tail of ${path}`, { cause: err })
    }
    try {
      await fh.writeFile(bytes)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await syncDirectory(dirname(path))
    return file
  }
}

/** Syncs a directory, so a file created or renamed in it survives a crash. */
export async function syncDirectory(dir: string): Promise<void> {
  const dh = await open(dir, 'r')
  try {
    await dh.sync()
  } finally {
    await dh.close()
  }
}

/** The side files of torn tails set aside from the log at `path`, oldest first. */
export async function listTornTails(path: string): Promise<Array<{ file: string; bytes: number }>> {
  const prefix = `${basename(path)}${SIDE_FILE_MARK}`
  let names: string[]
  try {
    names = await readdir(dirname(path))
  } catch {
    return []
  }
  const files = names.filter((n) => n.startsWith(prefix)).sort()
  return Promise.all(files.map(async (n) => ({ file: join(dirname(path), n), bytes: (await stat(join(dirname(path), n))).size })))
}
