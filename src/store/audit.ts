/**
 * The audit log: one JSON line per admission or refusal, appended to
 * `<dataDir>/audit.log`. Each entry carries the hash of the one before it and
 * its own hash over its content, so editing, inserting or deleting an entry
 * breaks the chain and {@link verifyAuditLog} names the first broken entry.
 * Given narthex's signing key, the log also keeps a signed checkpoint of its
 * head (`audit-checkpoint.ts`), which makes truncation and a rewritten chain
 * detectable too.
 */
import { createReadStream } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { SecretKey } from '../protocol/index.js'
import { auditCheckpointPath, CheckpointSigner } from './audit-checkpoint.js'
import { entryHash, GENESIS, repairTornTail, type TornTail } from './audit-tail.js'

/** One upstream's answer in a disagreement, as an audit entry records it. */
export interface AuditConflict {
  readonly upstream: string
  readonly narHash: string
  /** Trusted key names whose signatures over its fingerprint verify. */
  readonly signers: readonly string[]
}

/** What an audit entry records. */
export interface AuditEvent {
  /**
   * A unique id, set on events that go through the audit outbox (admissions):
   * the replay at start uses it to tell whether the log holds the event already.
   */
  readonly id?: string
  /** `admit`, `refuse`, `conflict`, `nar-rejected`, `push`, `import`, `deny-applied`, `forget`. */
  readonly decision: string
  readonly storePath: string
  readonly narHash?: string
  /** Every NarHash involved (a conflict or a refusal between answers), the admitted or first one first. */
  readonly narHashes?: readonly string[]
  /** The answers that disagreed: for `conflict`, the dissenting ones; for a CONFLICT refusal, every signed one. */
  readonly conflicts?: readonly AuditConflict[]
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

/** The audit log file of a data directory. */
export function auditLogPath(dataDir: string): string {
  return join(dataDir, 'audit.log')
}

/** Options of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** narthex's signing key: when given, a signed checkpoint is kept in `<dataDir>/audit.checkpoint`. */
  readonly signingKey?: SecretKey | undefined
  /** The least time between two checkpoints (default 2 s); the last one is signed on {@link AuditLog.flush}. */
  readonly checkpointIntervalMs?: number | undefined
  /** Told when a checkpoint cannot be written (appends go on regardless). */
  readonly onCheckpointError?: ((err: unknown) => void) | undefined
}

/** Appends entries to the audit log, one at a time, keeping the chain. */
export class AuditLog {
  #seq = 0
  #prev = GENESIS
  #queue: Promise<void> = Promise.resolve()
  #writing = false
  #syncs = 0
  #tornTail: TornTail | undefined
  #checkpoints: CheckpointSigner | undefined
  readonly #pending: Array<{ event: AuditEvent; resolve: () => void; reject: (err: unknown) => void }> = []

  private constructor(readonly path: string) {}

  /**
   * Opens the log in `dataDir`, picking up the chain where its last complete
   * entry left it. A torn last line (a crash mid-append) is moved into a side
   * file first; {@link AuditLog.tornTail} tells the caller, who should log it.
   * @throws NarthexError STORE_IO when the log cannot be read or repaired.
   */
  static async open(dataDir: string, options: AuditLogOptions = {}): Promise<AuditLog> {
    const log = new AuditLog(auditLogPath(dataDir))
    const { head, torn } = await repairTornTail(log.path)
    if (head) {
      log.#seq = head.seq
      log.#prev = head.hash
    }
    log.#tornTail = torn
    if (options.signingKey) {
      log.#checkpoints = await CheckpointSigner.start(auditCheckpointPath(dataDir), options.signingKey, { count: log.#seq, head: log.#prev }, {
        intervalMs: options.checkpointIntervalMs,
        onError: options.onCheckpointError,
      })
    }
    return log
  }

  /** The torn tail {@link AuditLog.open} set aside, if it found one. */
  get tornTail(): TornTail | undefined {
    return this.#tornTail
  }

  /** How many synced writes the log made; each writes one batch of appends. */
  get syncs(): number {
    return this.#syncs
  }

  /** The text of the latest signed checkpoint; undefined without a signing key or before the first one. */
  get checkpoint(): string | undefined {
    return this.#checkpoints?.latest
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
          this.#syncs++
          this.#seq = seq
          this.#prev = prev
          this.#checkpoints?.update(seq, prev)
          for (const p of batch) p.resolve()
        } catch (err) {
          for (const p of batch) p.reject(err)
        }
      }
    } finally {
      this.#writing = false
    }
  }

  /** Resolves when every append so far is written and, with a signing key, covered by a checkpoint. */
  async flush(): Promise<void> {
    await this.#queue
    await this.#checkpoints?.flush()
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
export type AuditVerification = (
  | { ok: true; entries: number }
  | { ok: false; entries: number; line: number; seq?: number; problem: string }
) & {
  /** The hash of each entry asked for by `hashesAt`, as long as the chain verified up to it. */
  heads?: ReadonlyMap<number, string>
  /** A last line without its newline (a crash mid-append), not counted; narthex sets it aside when it next opens the log. */
  incompleteTail?: { line: number; bytes: number }
}

/**
 * Checks the whole chain: each entry's hash, its link to the one before, and
 * sequence numbers. With `hashesAt`, also returns the hashes of those entries.
 */
export async function verifyAuditLog(path: string, options: { hashesAt?: Iterable<number> } = {}): Promise<AuditVerification> {
  const wanted = options.hashesAt ? new Set(options.hashesAt) : undefined
  const heads = new Map<number, string>()
  const extra = () => ({ ...(wanted ? { heads } : {}) })
  let prev = GENESIS
  let seq = 0
  let entries = 0
  const endsWithNewline = await lastByteIsNewline(path)
  if (endsWithNewline === undefined) return { ok: true, entries: 0, ...extra() }
  let held: { line: number; entry: AuditEntry | undefined; raw: string } | undefined
  const check = ({ line, entry }: NonNullable<typeof held>): AuditVerification | undefined => {
    if (!entry) return { ok: false, entries, line, problem: 'not a JSON entry', ...extra() }
    const { hash, ...body } = entry
    if (entry.prev !== prev) return { ok: false, entries, line, seq: entry.seq, problem: 'does not link to the entry before it (an entry was removed, inserted or changed)', ...extra() }
    if (entry.seq !== seq + 1) return { ok: false, entries, line, seq: entry.seq, problem: `sequence number ${entry.seq} where ${seq + 1} was expected`, ...extra() }
    if (entryHash(body) !== hash) return { ok: false, entries, line, seq: entry.seq, problem: 'its content does not match its hash (the entry was edited)', ...extra() }
    prev = hash
    seq = entry.seq
    entries++
    if (wanted?.has(seq)) heads.set(seq, hash)
    return undefined
  }
  // One line is held back: only once the next arrives is it known not to be the last.
  for await (const item of readAuditLog(path)) {
    const failed = held && check(held)
    if (failed) return failed
    held = item
  }
  if (held && !endsWithNewline) return { ok: true, entries, ...extra(), incompleteTail: { line: held.line, bytes: Buffer.byteLength(held.raw) } }
  return (held && check(held)) || { ok: true, entries, ...extra() }
}

/** Whether the file ends with a newline; undefined when it is missing or empty. */
async function lastByteIsNewline(path: string): Promise<boolean | undefined> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch {
    return undefined
  }
  if (size === 0) return undefined
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(1)
    await fh.read(buf, 0, 1, size - 1)
    return buf[0] === 0x0a
  } finally {
    await fh.close()
  }
}
