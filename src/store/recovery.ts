/**
 * Repairing a store after an unclean stop, while narthex serves.
 *
 * After a clean close the store leaves a `clean` marker (with its total NAR
 * bytes) and the next open needs no scan at all. Without the marker (a crash,
 * a kill, a power loss) the index and `nar/` are compared: NAR files no index
 * entry names (renamed into place by a commit whose index write never came) are
 * removed, and entries whose file is missing or has the wrong size (removed or
 * truncated from outside: narthex indexes a file only once it was fsynced and
 * renamed) are dropped. That takes time in proportion to the store (seconds at
 * hundreds of thousands of files), so it runs in the background.
 *
 * It is safe to serve meanwhile because the index only ever names files that
 * were durable first. Every removal is decided again inside
 * {@link RepairHooks.exclusive}, between two commit flushes: a file a running
 * commit has just renamed in is indexed by the time the repair looks again, so
 * it is never taken for an orphan.
 */
import { statSync } from 'node:fs'
import { open, readdir, readFile, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { NarthexError } from '../errors.js'
import { narShardPath, parseNarFileName } from '../protocol/index.js'
import { syncDir } from './commit-queue.js'
import type { Sublevels } from './store-index.js'

const CLEAN_MARKER = 'clean'

// The longest a repair keeps the event loop before letting requests through (ms).
const SLICE_MS = 2

// A pushed NAR whose narinfo never came within a day is abandoned.
const UPLOAD_TTL_MS = 24 * 3600 * 1000

/** What a clean close leaves in the data directory. */
export interface CleanMarker {
  /** Bytes of all indexed NAR files at the close. */
  readonly totalBytes: number
}

/** What opening a store found and repaired. */
export interface RecoveryReport {
  /** True when the last close was clean (the marker was there) or the store is new: nothing needed a scan. */
  clean: boolean
  /** True when the index and `nar/` were compared (no marker). */
  scanned: boolean
  tempFilesRemoved: number
  orphanFilesRemoved: number
  danglingEntriesRemoved: number
  /** Paths under `nar/` (relative to it) that are not NAR files of this store; left as they are. */
  strayFiles: string[]
}

/** What the repair needs of the store it repairs. */
export interface RepairHooks {
  readonly narDir: string
  /** The indexed NAR files as of the call (a snapshot taken at once), with their sizes. */
  indexed(): AsyncIterable<readonly [string, number]>
  /** The indexed size of a NAR file now, or undefined. */
  sizeOf(fileName: string): Promise<number | undefined>
  /** Drops an index entry whose file is gone. */
  dropEntry(fileName: string): Promise<void>
  narPath(fileName: string): string
  /** Runs `task` between two commit flushes (see commit-queue.ts). */
  exclusive<R>(task: () => Promise<R>): Promise<R>
  /** True once the store is closing: the repair stops where it is. */
  stopped(): boolean
}

/**
 * Reads and removes the clean marker of `dataDir`, durably: from now on, until
 * the next clean close, a stop must be taken for a crash.
 * @returns the marker, or undefined when the last stop was not clean.
 * @throws NarthexError STORE_IO when the marker cannot be removed.
 */
export async function takeCleanMarker(dataDir: string): Promise<CleanMarker | undefined> {
  const path = join(dataDir, CLEAN_MARKER)
  const text = await readFile(path, 'utf8').catch(() => undefined)
  if (text === undefined) return undefined
  try {
    await unlink(path)
    await syncDir(dataDir)
  } catch (err) {
    throw new NarthexError('STORE_IO', `cannot remove ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
  }
  try {
    const marker = JSON.parse(text) as CleanMarker
    return Number.isSafeInteger(marker.totalBytes) && marker.totalBytes >= 0 ? marker : undefined
  } catch {
    return undefined
  }
}

/** Leaves the clean marker (fsynced, with its directory): the next open needs no scan. */
export async function writeCleanMarker(dataDir: string, totalBytes: number): Promise<void> {
  const fh = await open(join(dataDir, CLEAN_MARKER), 'w')
  try {
    await fh.writeFile(JSON.stringify({ totalBytes } satisfies CleanMarker))
    await fh.sync()
  } finally {
    await fh.close()
  }
  await syncDir(dataDir)
}

/**
 * Removes every temp file (only a crash leaves them, and nothing writes them
 * before the store is open) and uploads older than a day, counting them in `report`.
 */
export async function removeTempFiles(tmpDir: string, uploadsDir: string, report: RecoveryReport): Promise<void> {
  for (const name of await readdir(tmpDir)) {
    await rm(join(tmpDir, name), { force: true, recursive: true })
    report.tempFilesRemoved++
  }
  for (const name of await readdir(uploadsDir)) {
    const st = await stat(join(uploadsDir, name)).catch(() => undefined)
    if (st && Date.now() - st.mtimeMs > UPLOAD_TTL_MS) {
      await rm(join(uploadsDir, name), { force: true })
      report.tempFilesRemoved++
    }
  }
}

/** The {@link RepairHooks} of a store's index: its NAR records and their last-use times. */
export function indexRepairHooks(ix: Sublevels, rest: Pick<RepairHooks, 'narDir' | 'narPath' | 'exclusive' | 'stopped'>): RepairHooks {
  const nars = ix.nars
  return {
    ...rest,
    indexed: () => {
      // Created now, so its snapshot is the index as of the open.
      const it = nars.iterator()
      return (async function* () {
        for await (const [name, rec] of it) yield [name, rec.fileSize] as const
      })()
    },
    sizeOf: async (name) => (await nars.get(name))?.fileSize,
    dropEntry: async (name) => {
      await nars.del(name)
      await ix.access.del(name)
    },
  }
}

/** A fresh report of nothing done yet. */
export function emptyReport(clean: boolean): RecoveryReport {
  return { clean, scanned: false, tempFilesRemoved: 0, orphanFilesRemoved: 0, danglingEntriesRemoved: 0, strayFiles: [] }
}

function fileSizeNow(path: string): number | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false })?.size
  } catch {
    return undefined
  }
}

/**
 * Compares the index with `nar/`, removes orphan files and drops dangling
 * entries (see the module comment), filling `report`.
 * @returns the bytes of the indexed files found sound, as of the snapshot.
 */
export async function repairStore(hooks: RepairHooks, report: RecoveryReport): Promise<number> {
  report.scanned = true
  // Taken before anything else: commits from now on are counted by the store, not by the scan.
  const indexed = hooks.indexed()
  const onDisk = new Set<string>()
  for (const shard of await readdir(hooks.narDir)) {
    if (hooks.stopped()) return 0
    const names = await readdir(join(hooks.narDir, shard)).catch(() => undefined)
    if (names === undefined) {
      report.strayFiles.push(shard)
      continue
    }
    for (const name of names) {
      // Only a NAR file name in its own shard is ours to judge; anything else
      // (another client's lock or NFS file) is not deleted, and never fed to narPath.
      const where = `${shard}/${name}`
      if (parseNarFileName(name) && narShardPath(name) === where) onDisk.add(name)
      else report.strayFiles.push(where)
    }
  }
  let bytes = 0
  const suspects: string[] = []
  // The sizes are read with synchronous stats, in slices of SLICE_MS between which requests
  // are served: a promise and a round trip through libuv's threads for each file made most of
  // a repair's time (90 s at 1,000,000 files, against a few seconds of stats).
  let slice = performance.now()
  for await (const [name, size] of indexed) {
    if (hooks.stopped()) return bytes
    // A file whose size differs from its record was not written by a completed commit.
    if (onDisk.delete(name) && fileSizeNow(hooks.narPath(name)) === size) bytes += size
    else suspects.push(name)
    if (performance.now() - slice >= SLICE_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve))
      slice = performance.now()
    }
  }
  for (const name of suspects) {
    if (hooks.stopped()) return bytes
    const dropped = await hooks.exclusive(async () => {
      const size = await hooks.sizeOf(name)
      if (size === undefined) return false
      if (fileSizeNow(hooks.narPath(name)) === size) return false
      await hooks.dropEntry(name)
      await rm(hooks.narPath(name), { force: true })
      return true
    })
    if (dropped) report.danglingEntriesRemoved++
  }
  for (const name of onDisk) {
    if (hooks.stopped()) return bytes
    const removed = await hooks.exclusive(async () => {
      // Indexed meanwhile: a commit renamed it in and wrote its entry after the snapshot.
      if ((await hooks.sizeOf(name)) !== undefined) return false
      await rm(hooks.narPath(name), { force: true })
      return true
    })
    if (removed) report.orphanFilesRemoved++
  }
  return bytes
}
