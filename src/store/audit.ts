/**
 * The audit log: one JSON line per admission or refusal, appended to
 * `<dataDir>/audit.log`. Each entry carries the hash of the one before it and
 * its own hash over its content, so editing, inserting or deleting an entry
 * breaks the chain and {@link verifyAuditLog} names the first broken entry.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

/** What an audit entry records. */
export interface AuditEvent {
  /** `admit`, `refuse`, `nar-rejected`, `push`, `import`. */
  readonly decision: string
  readonly storePath: string
  readonly narHash?: string
  readonly upstreams?: readonly string[]
  /** Key names whose signatures counted. */
  readonly signers?: readonly string[]
  /** Index of the rule applied. */
  readonly rule?: number
  readonly reason?: string
  readonly message?: string
  /** The name of the client token a push came with. */
  readonly token?: string
}

/** A stored entry: the event with its sequence number, time and chain hashes. */
export interface AuditEntry extends AuditEvent {
  readonly seq: number
  readonly time: string
  readonly prev: string
  readonly hash: string
}

const GENESIS = '0'.repeat(64)

function entryHash(entry: Omit<AuditEntry, 'hash'>): string {
  return createHash('sha256').update(JSON.stringify(entry)).digest('hex')
}

/** The audit log file of a data directory. */
export function auditLogPath(dataDir: string): string {
  return join(dataDir, 'audit.log')
}

/** Appends entries to the audit log, one at a time, keeping the chain. */
export class AuditLog {
  #seq = 0
  #prev = GENESIS
  #queue: Promise<void> = Promise.resolve()
  #writing = false
  readonly #pending: Array<{ event: AuditEvent; resolve: () => void; reject: (err: unknown) => void }> = []

  private constructor(readonly path: string) {}

  /** Opens the log in `dataDir`, picking up the chain where its last complete entry left it. */
  static async open(dataDir: string): Promise<AuditLog> {
    const log = new AuditLog(auditLogPath(dataDir))
    const last = await readLastLine(log.path)
    if (last) {
      try {
        const entry = JSON.parse(last) as AuditEntry
        log.#seq = entry.seq
        log.#prev = entry.hash
      } catch {
        // A torn last line (crash mid-append) is left for `audit --verify` to report.
      }
    }
    return log
  }

  /**
   * Appends an event; resolves once it is written and synced. Events appended
   * while a write is in progress are written together with one fsync (group
   * commit), so many concurrent admissions cost one sync, not one each.
   */
  append(event: AuditEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ event, resolve, reject })
      if (!this.#writing) this.#queue = this.#drain()
    })
  }

  async #drain(): Promise<void> {
    this.#writing = true
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.splice(0)
        let seq = this.#seq
        let prev = this.#prev
        let text = ''
        for (const { event } of batch) {
          const body = { seq: ++seq, time: new Date().toISOString(), ...event, prev }
          prev = entryHash(body)
          text += `${JSON.stringify({ ...body, hash: prev })}\n`
        }
        try {
          const fh = await open(this.path, 'a')
          try {
            await fh.appendFile(text)
            await fh.datasync()
          } finally {
            await fh.close()
          }
          this.#seq = seq
          this.#prev = prev
          for (const p of batch) p.resolve()
        } catch (err) {
          for (const p of batch) p.reject(err)
        }
      }
    } finally {
      this.#writing = false
    }
  }

  /** Resolves when every append so far is written. */
  async flush(): Promise<void> {
    await this.#queue
  }
}

async function readLastLine(path: string): Promise<string | undefined> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch {
    return undefined
  }
  if (size === 0) return undefined
  const fh = await open(path, 'r')
  try {
    const len = Math.min(size, 1 << 20)
    const buf = Buffer.alloc(len)
    await fh.read(buf, 0, len, size - len)
    const lines = buf.toString('utf8').split('\n').filter((l) => l.trim() !== '')
    return lines.at(-1)
  } finally {
    await fh.close()
  }
}

/** Reads every entry of an audit log, in order (a line that is not JSON stops with an error). */
export async function* readAuditLog(path: string): AsyncGenerator<{ line: number; entry: AuditEntry | undefined; raw: string }> {
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity })
  let line = 0
  for await (const raw of rl) {
    line++
    if (raw.trim() === '') continue
    let entry: AuditEntry | undefined
    try {
      entry = JSON.parse(raw) as AuditEntry
    } catch {
      entry = undefined
    }
    yield { line, entry, raw }
  }
}

/** The result of {@link verifyAuditLog}. */
export type AuditVerification = { ok: true; entries: number } | { ok: false; entries: number; line: number; seq?: number; problem: string }

/** Checks the whole chain: each entry's hash, its link to the one before, and sequence numbers. */
export async function verifyAuditLog(path: string): Promise<AuditVerification> {
  let prev = GENESIS
  let seq = 0
  let entries = 0
  try {
    await stat(path)
  } catch {
    return { ok: true, entries: 0 }
  }
  for await (const { line, entry } of readAuditLog(path)) {
    if (!entry) return { ok: false, entries, line, problem: 'not a JSON entry' }
    const { hash, ...body } = entry
    if (entry.prev !== prev) return { ok: false, entries, line, seq: entry.seq, problem: 'does not link to the entry before it (an entry was removed, inserted or changed)' }
    if (entry.seq !== seq + 1) return { ok: false, entries, line, seq: entry.seq, problem: `sequence number ${entry.seq} where ${seq + 1} was expected` }
    if (entryHash(body) !== hash) return { ok: false, entries, line, seq: entry.seq, problem: 'its content does not match its hash (the entry was edited)' }
    prev = hash
    seq = entry.seq
    entries++
  }
  return { ok: true, entries }
}

