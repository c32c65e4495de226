/**
 * Signed checkpoints of the audit log, kept in `<dataDir>/audit.checkpoint`:
 * narthex signs (entry count, head hash, time) with its own key after appends
 * are synced, at most once per interval, and once more when the log is
 * flushed on shutdown. An auditor copies them elsewhere and later checks that
 * the log still holds exactly the entries each one committed to.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { parseCheckpoint, signCheckpoint, type Checkpoint, type SecretKey } from '../protocol/index.js'
import { GENESIS, syncDirectory } from './audit-tail.js'

/** The checkpoint file of a data directory. */
export function auditCheckpointPath(dataDir: string): string {
  return join(dataDir, 'audit.checkpoint')
}

/** The default least time between two checkpoints. */
export const CHECKPOINT_INTERVAL_MS = 2000

/**
 * Writes signed checkpoints of a log's head, rate-limited. Never signs a head
 * before the entries it names are synced: its caller reports only synced heads.
 */
export class CheckpointSigner {
  #latest: string | undefined
  #signed: { count: number; head: string } | undefined
  #wanted: { count: number; head: string } | undefined
  #lastWriteMs = -Infinity
  #timer: NodeJS.Timeout | undefined
  #queue: Promise<void> = Promise.resolve()

  private constructor(
    readonly path: string,
    readonly key: SecretKey,
    readonly intervalMs: number,
    readonly onError: (err: unknown) => void,
  ) {}

  /**
   * Starts signing into `path`, picking up the checkpoint already there, and
   * signs `head` at once unless that checkpoint already commits to it.
   */
  static async start(path: string, key: SecretKey, head: { count: number; head: string }, options: { intervalMs?: number | undefined; onError?: ((err: unknown) => void) | undefined } = {}): Promise<CheckpointSigner> {
    const signer = new CheckpointSigner(path, key, options.intervalMs ?? CHECKPOINT_INTERVAL_MS, options.onError ?? (() => undefined))
    try {
      const text = await readFile(path, 'utf8')
      const { checkpoint } = parseCheckpoint(text)
      signer.#latest = text
      if (checkpoint.keyName === key.name) signer.#signed = { count: checkpoint.count, head: checkpoint.head }
    } catch {
      // Missing or unreadable: a new one is signed below, if there is anything to sign.
    }
    if (head.count > 0) {
      signer.update(head.count, head.head)
      await signer.#queue
    }
    return signer
  }

  /** The text of the latest checkpoint, if there is one yet. */
  get latest(): string | undefined {
    return this.#latest
  }

  /** The log's synced head moved: sign it now, or when the interval since the last checkpoint is over. */
  update(count: number, head: string): void {
    this.#wanted = { count, head }
    if (this.#timer) return
    const wait = this.#lastWriteMs + this.intervalMs - Date.now()
    if (wait <= 0) this.#queue = this.#queue.then(() => this.#write())
    else {
      this.#timer = setTimeout(() => {
        this.#timer = undefined
        this.#queue = this.#queue.then(() => this.#write())
      }, wait)
      this.#timer.unref()
    }
  }

  /** Signs the latest head now if it has no checkpoint yet; resolves when it is written. */
  async flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
    this.#queue = this.#queue.then(() => this.#write())
    await this.#queue
  }

  async #write(): Promise<void> {
    const wanted = this.#wanted
    if (!wanted || (this.#signed?.count === wanted.count && this.#signed.head === wanted.head)) return
    this.#lastWriteMs = Date.now()
    try {
      const text = signCheckpoint({ ...wanted, time: new Date().toISOString() }, this.key)
      await writeFileAtomically(this.path, text)
      this.#latest = text
      this.#signed = wanted
    } catch (err) {
      this.onError(err)
    }
  }
}

/** Writes `text` to a temporary file, syncs it, renames it over `path` and syncs the directory. */
async function writeFileAtomically(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${process.pid}`
  const fh = await open(temp, 'w', 0o644)
  try {
    await fh.writeFile(text)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(temp).catch(() => undefined)
    throw err
  }
  await fh.close()
  await rename(temp, path)
  await syncDirectory(dirname(path))
}

/** How the log compares with one checkpoint. */
export type CheckpointComparison =
  | { readonly ok: true; readonly checkpoint: Checkpoint }
  | {
      readonly ok: false
      readonly checkpoint: Checkpoint
      /** The log was rewritten (entry `count` has another hash), its chain breaks first, or it is shorter. */
      readonly kind: 'rewritten' | 'broken' | 'short'
      /** The entry named: the first broken link, or the entry whose hash differs from the committed one. */
      readonly seq?: number
      readonly problem: string
    }

/** What a verification of the log found, as far as checkpoints need it. */
export interface ChainFacts {
  /** Entries that verified before the chain broke (or all of them). */
  readonly entries: number
  /** The hash of each entry asked for, while the chain still verified. */
  readonly heads: ReadonlyMap<number, string>
  /** Where the chain broke, if it did. */
  readonly broken?: { readonly seq?: number | undefined; readonly line: number; readonly problem: string } | undefined
}

/**
 * Compares the log with a checkpoint: entry `count` must exist, the chain up to
 * it must verify, and its hash must be the committed head.
 */
export function compareWithCheckpoint(facts: ChainFacts, checkpoint: Checkpoint): CheckpointComparison {
  const { count, head } = checkpoint
  const actual = count === 0 ? GENESIS : facts.heads.get(count)
  if (actual === head) return { ok: true, checkpoint }
  if (actual !== undefined) {
    return { ok: false, checkpoint, kind: 'rewritten', seq: count, problem: `entry ${count} has hash ${actual}, the checkpoint commits to ${head}: the log was rewritten at or before entry ${count}` }
  }
  if (facts.broken) {
    const at = facts.broken.seq ?? facts.entries + 1
    return { ok: false, checkpoint, kind: 'broken', seq: at, problem: `the chain breaks at entry ${at} (line ${facts.broken.line}), within the ${count} entries the checkpoint commits to: ${facts.broken.problem}` }
  }
  return { ok: false, checkpoint, kind: 'short', problem: `the log has ${facts.entries} entries, the checkpoint commits to ${count}` }
}
