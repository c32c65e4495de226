/**
 * NAR verification off the main thread. A download writes its temp file on the
 * main thread and tells a verification thread how far the file has grown; the
 * thread reads the file behind the writer, hashes it, decompresses it and checks
 * NarHash, NarSize and the NAR grammar (verify-thread.ts). The main thread keeps
 * only the sockets and the disk writes, so a large NAR being verified, or
 * hundreds of small ones, never take turns with the clients on the event loop,
 * and no NAR byte is copied between threads.
 *
 * A few long-lived threads (one per spare core, at least one) take every job,
 * each on the least busy thread. A thread that dies fails its jobs and is
 * replaced.
 */
import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { NarthexError, type ErrorCode } from '../errors.js'

/** What a verification thread is asked to check: a NAR file as a download writes it. */
export interface VerifyJob {
  readonly id: number
  /** The temp file being written. */
  readonly path: string
  readonly compression: string
  readonly fileHash?: string | undefined
  readonly fileSize?: number | undefined
  readonly narHash: string
  readonly narSize: number
  /** Uncompressed and FileHash = NarHash: the file is the NAR, hashed once. */
  readonly single: boolean
}

/** Messages to a verification thread. */
export type ToVerifier =
  | { readonly type: 'start'; readonly job: VerifyJob }
  | { readonly type: 'grow'; readonly id: number; readonly written: number; readonly ended: boolean }
  | { readonly type: 'abort'; readonly id: number }

/** Messages from a verification thread. */
export type FromVerifier =
  | { readonly type: 'read'; readonly id: number; readonly pos: number }
  | { readonly type: 'done'; readonly id: number; readonly fileHash: string; readonly fileSize: number; readonly narHash: string; readonly narSize: number }
  | { readonly type: 'error'; readonly id: number; readonly code: ErrorCode; readonly message: string }

/** The measured values of a verified NAR file (hashes as `algo:nix32`). */
export interface VerifiedNar {
  readonly fileHash: string
  readonly fileSize: number
  readonly narHash: string
  readonly narSize: number
}

interface Pending {
  resolve(v: VerifiedNar): void
  reject(e: NarthexError): void
  read(pos: number): void
}

class VerifyThread {
  readonly worker: Worker
  readonly pending = new Map<number, Pending>()

  constructor(onExit: (t: VerifyThread) => void) {
    this.worker = startThread()
    this.worker.on('message', (msg: FromVerifier) => {
      const p = this.pending.get(msg.id)
      if (!p) return
      if (msg.type === 'read') return p.read(msg.pos)
      this.pending.delete(msg.id)
      if (msg.type === 'done') p.resolve(msg)
      else p.reject(new NarthexError(msg.code, msg.message))
    })
    this.worker.on('error', () => undefined)
    this.worker.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new NarthexError('STORE_IO', 'the verification thread stopped'))
      this.pending.clear()
      onExit(this)
    })
    // Idle threads do not keep the process alive; running jobs keep their callers waiting. After
    // the listeners: adding a 'message' listener refs the thread's port again.
    this.worker.unref()
  }
}

/** How far the file grows between two messages to the thread: few messages, little lag. */
export const GROW_STEP = 4 * 1024 * 1024

// A small young generation: the thread's garbage (decoder output chunks) is collected early
// instead of growing the process's memory.
const THREAD_LIMITS = { maxYoungGenerationSizeMb: 4 }

/** Starts dist/store/verify-thread.js, or the .ts source when narthex runs from its sources (tests, under tsx). */
function startThread(): Worker {
  const ext = extname(fileURLToPath(import.meta.url))
  const entry = new URL(`./verify-thread${ext}`, import.meta.url)
  if (ext !== '.ts') return new Worker(entry, { resourceLimits: THREAD_LIMITS })
  // Loader hooks (`--import tsx`) do not reach worker threads: register tsx in the thread first.
  const tsx = import.meta.resolve('tsx/esm/api')
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}) })`, {
    eval: true,
    resourceLimits: THREAD_LIMITS,
  })
}

let threads: VerifyThread[] = []
let nextId = 1

// One thread per spare core (the main thread has one), at least one, at most four.
const THREADS = Math.max(1, Math.min(4, availableParallelism() - 1))

function pickThread(): VerifyThread {
  startVerifyThreads()
  return threads.reduce((a, b) => (b.pending.size < a.pending.size ? b : a))
}

/**
 * One NAR file under verification: call {@link Verification.grow} as bytes reach
 * the file, {@link Verification.end} once all are there, and await
 * {@link Verification.result}.
 */
export class Verification {
  readonly result: Promise<VerifiedNar>
  readonly #thread: VerifyThread
  readonly #id: number
  #settled = false
  #sent = 0
  /** How far the thread has read the file. */
  #readPos = 0
  #onRead: (() => void) | undefined

  constructor(job: Omit<VerifyJob, 'id'>) {
    this.#id = nextId++
    this.#thread = pickThread()
    this.result = new Promise<VerifiedNar>((resolve, reject) => {
      this.#thread.pending.set(this.#id, {
        resolve,
        reject,
        read: (pos) => {
          this.#readPos = pos
          this.#wakeReader()
        },
      })
    }).finally(() => {
      this.#settled = true
      this.#wakeReader()
    })
    // Callers may look at the result only at the end; an early failure is not unhandled.
    this.result.catch(() => undefined)
    this.#thread.worker.ref()
    void this.result.finally(() => {
      if (this.#thread.pending.size === 0) this.#thread.worker.unref()
    }).catch(() => undefined)
    this.#thread.worker.postMessage({ type: 'start', job: { ...job, id: this.#id } } satisfies ToVerifier)
  }

  /** True once the result is known (a failure may come before the end). */
  get settled(): boolean {
    return this.#settled
  }

  /** The file now holds `written` bytes (told to the thread in steps of {@link GROW_STEP}). */
  grow(written: number): void {
    if (this.#settled || written - this.#sent < GROW_STEP) return
    this.#sent = written
    this.#thread.worker.postMessage({ type: 'grow', id: this.#id, written, ended: false } satisfies ToVerifier)
  }

  /**
   * Resolves once the thread has read the file to within `maxLag` bytes of
   * `written` (or the verification ended): a download waits on it so that it
   * never runs far ahead of its verification. Unverified bytes do not pile up
   * on disk, and the main thread's work for a download is spread over its
   * verification instead of coming in one burst.
   */
  async caughtUp(written: number, maxLag: number): Promise<void> {
    while (!this.#settled && written - this.#readPos > maxLag) {
      // The thread may be waiting for news of bytes it has not been told of yet.
      this.#thread.worker.postMessage({ type: 'grow', id: this.#id, written, ended: false } satisfies ToVerifier)
      this.#sent = written
      await new Promise<void>((r) => (this.#onRead = r))
    }
  }

  #wakeReader(): void {
    const wake = this.#onRead
    this.#onRead = undefined
    wake?.()
  }

  /** The file is complete at `written` bytes. */
  end(written: number): void {
    if (!this.#settled) this.#thread.worker.postMessage({ type: 'grow', id: this.#id, written, ended: true } satisfies ToVerifier)
  }

  /** Gives up (the download failed); the result rejects. */
  abort(): void {
    if (!this.#settled) this.#thread.worker.postMessage({ type: 'abort', id: this.#id } satisfies ToVerifier)
  }
}

/**
 * Starts the verification threads ahead of the first download, so that a
 * thread's start-up (tens of milliseconds) never delays a client's first byte.
 */
export function startVerifyThreads(): void {
  while (threads.length < THREADS) {
    const t: VerifyThread = new VerifyThread((dead) => {
      threads = threads.filter((x) => x !== dead)
    })
    threads.push(t)
  }
}

/** Stops the verification threads (tests; the process exits without it). */
export async function stopVerifyThreads(): Promise<void> {
  const all = threads
  threads = []
  await Promise.all(all.map((t) => t.worker.terminate()))
}
