/**
 * Uploads of verified NAR files to the bucket, durable across crashes: a NAR's
 * commit writes "to upload" into the index's `upload` sublevel in the same
 * synced batch as its record (Store's `uploadToBucket`), and the entry is
 * cleared only once the object is in the bucket. At start every entry left is
 * queued again, so a crash at any point leaves at worst an upload done twice
 * (a PUT of the same bytes), never one forgotten. Uploads run a few at a time;
 * a failed one is retried with exponential backoff for as long as narthex
 * runs, so while the bucket is down NARs wait here and the node goes on
 * serving them from its disk (where they are kept until uploaded).
 */
import type { Logger } from 'pino'
import type { Bucket } from './bucket.js'
import type { Store } from './store.js'

/** Settings of an {@link UploadQueue}. */
export interface UploadQueueOptions {
  /** Uploads at once; default 4. */
  readonly concurrency?: number
  /** First retry delay after a failure, doubled on each further one up to `maxBackoffMs`; defaults 1 s and 60 s. */
  readonly minBackoffMs?: number
  readonly maxBackoffMs?: number
}

/** What the queue has done, for the metrics and the status page. */
export interface UploadFigures {
  /** NAR files waiting for their upload or being uploaded. */
  readonly pending: number
  readonly uploadedFiles: number
  readonly uploadedBytes: number
  /** Files found in the bucket already (same size), so not uploaded again. */
  readonly skippedFiles: number
  readonly failures: number
  /** The last failure, when it is more recent than the last success. */
  readonly lastError?: { readonly message: string; readonly at: number } | undefined
}

/** The durable queue of NAR uploads to the bucket. */
export class UploadQueue {
  readonly #store: Store
  readonly #bucket: Bucket
  readonly #log: Logger
  readonly #concurrency: number
  readonly #minBackoffMs: number
  readonly #maxBackoffMs: number
  /** File names queued, waiting for a retry, or uploading → failed attempts so far. */
  readonly #pending = new Map<string, number>()
  readonly #ready: string[] = []
  readonly #running = new Map<string, AbortController>()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #idle: Array<() => void> = []
  #closed = false
  #uploadedFiles = 0
  #uploadedBytes = 0
  #skippedFiles = 0
  #failures = 0
  #lastError: { message: string; at: number } | undefined

  constructor(store: Store, bucket: Bucket, log: Logger, options: UploadQueueOptions = {}) {
    this.#store = store
    this.#bucket = bucket
    this.#log = log
    this.#concurrency = options.concurrency ?? 4
    this.#minBackoffMs = options.minBackoffMs ?? 1_000
    this.#maxBackoffMs = options.maxBackoffMs ?? 60_000
  }

  /**
   * Follows the store's commits from now on and queues every upload a
   * previous run left unfinished.
   * @returns how many were left.
   */
  async start(): Promise<number> {
    this.#store.onNarsCommitted((names) => {
      for (const name of names) this.#add(name)
    })
    let left = 0
    for await (const [name] of this.#store.pendingUploads()) {
      this.#add(name)
      left++
    }
    return left
  }

  /** Current figures. */
  get figures(): UploadFigures {
    return {
      pending: this.#pending.size,
      uploadedFiles: this.#uploadedFiles,
      uploadedBytes: this.#uploadedBytes,
      skippedFiles: this.#skippedFiles,
      failures: this.#failures,
      lastError: this.#lastError,
    }
  }

  /** Resolves once nothing is waiting or uploading (tests, and `close` callers that want it done). */
  idle(): Promise<void> {
    if (this.#pending.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  /** Stops: aborts running uploads and cancels retries; what is left stays in the index for the next start. */
  async close(): Promise<void> {
    this.#closed = true
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    for (const c of this.#running.values()) c.abort()
    while (this.#running.size > 0) await new Promise((r) => setTimeout(r, 10))
  }

  #add(name: string): void {
    if (this.#closed || this.#pending.has(name)) return
    this.#pending.set(name, 0)
    this.#ready.push(name)
    this.#pump()
  }

  #pump(): void {
    while (!this.#closed && this.#running.size < this.#concurrency && this.#ready.length > 0) {
      const name = this.#ready.shift()!
      const controller = new AbortController()
      this.#running.set(name, controller)
      void this.#upload(name, controller.signal).then(
        () => this.#done(name),
        (err: unknown) => this.#failed(name, err),
      )
    }
  }

  async #upload(name: string, signal: AbortSignal): Promise<void> {
    const stored = await this.#store.getNarFile(name)
    // Removed since (moved aside as corrupt by `narthex verify`): nothing to upload.
    if (!stored) return
    const rel = `nar/${name}`
    if ((await this.#bucket.sizeOf(rel)) === stored.fileSize) {
      this.#skippedFiles++
      return
    }
    await this.#bucket.uploadFile(rel, this.#store.narPath(name), stored.fileSize, signal)
    this.#uploadedFiles++
    this.#uploadedBytes += stored.fileSize
    this.#lastError = undefined
    this.#log.debug({ file: name, bytes: stored.fileSize }, 'NAR uploaded to the bucket')
  }

  #done(name: string): void {
    this.#running.delete(name)
    this.#store.clearUpload(name).then(
      () => this.#settle(name),
      (err: unknown) => this.#failed(name, err, false),
    )
    this.#pump()
  }

  #failed(name: string, err: unknown, running = true): void {
    if (running) this.#running.delete(name)
    if (this.#closed) return
    const attempts = (this.#pending.get(name) ?? 0) + 1
    this.#pending.set(name, attempts)
    this.#failures++
    const message = (err as Error).message
    this.#lastError = { message, at: Date.now() }
    const delay = Math.min(this.#maxBackoffMs, this.#minBackoffMs * 2 ** (attempts - 1)) * (0.75 + Math.random() / 2)
    this.#log.warn({ file: name, attempts, retryInMs: Math.round(delay), err: message }, 'cannot upload a NAR to the bucket; it stays queued')
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      this.#ready.push(name)
      this.#pump()
    }, delay)
    timer.unref()
    this.#timers.add(timer)
    this.#pump()
  }

  #settle(name: string): void {
    this.#pending.delete(name)
    if (this.#pending.size === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }
}
