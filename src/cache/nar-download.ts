/**
 * One upstream download of a NAR file, shared by every client that asks for it
 * while it runs.
 *
 * The bytes go to a temp file as they arrive; a verification thread follows
 * the file (store/verifier.ts), hashing FileHash/FileSize and, through the
 * decompressor, checking NarHash/NarSize and the NAR grammar. Clients read the temp file behind the writer ({@link NarFollower}), so
 * each has its own pace and memory stays flat however many there are, and the
 * slowest client never slows the download. The last byte is held back from
 * every client until the whole NAR is verified (FileHash/FileSize,
 * NarHash/NarSize, grammar): a NAR that fails verification can never reach a
 * client as a complete response. Durability is not waited for: the verified
 * file goes to the store's commit queue (fsync, rename, index, grouped with
 * the NARs verified meanwhile), and clients that join before the commit is
 * done read the same file (the same inode once renamed).
 *
 * Policy on client disconnects: the download goes on. It feeds the cache, and
 * other clients may be waiting or may ask soon.
 */
import { EventEmitter } from 'node:events'
import { closeSync, openSync } from 'node:fs'
import { open, unlink, type FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { NarthexError } from '../errors.js'
import { formatNixHash, nixHashEquals, type NarInfo } from '../protocol/index.js'
import { copyFileTo } from '../file-copy.js'
import {
  classifyNarError,
  inProcessDecodersInUse,
  NarFileCheck,
  Verification,
  type NarErrorContext,
  type NarFileRecord,
  type NarFileSpec,
  type Store,
  type VerifiedNar,
} from '../store/index.js'
import type { Upstream } from '../upstream/index.js'

// How far a download may run ahead of its verification thread.
const MAX_UNVERIFIED = 32 * 1024 * 1024

// Bytes written between two background flushes of the temp file to disk.
const SYNC_EVERY = 64 * 1024 * 1024

// NARs this small are verified on the main thread: for them a verification thread's messages
// (start, end, result) cost more than the check itself. Only with in-process decoders: an xz file
// only while the main thread's in-process xz decoders have room for it (otherwise the decoder would
// be an `xz` child, whose spawn is a synchronous fork on the event loop), zstd and none always.
const IN_PROCESS_MAX_BYTES = 64 * 1024

// In-process xz checks running: each takes its decoder only once its file is open, so they are
// counted here at the start, and only while no other in-process decoder runs (pushes). At most
// TINY_XZ_CHECKS NARs of at most TINY_XZ_MAX_NAR bytes: together well within the thread's
// in-process allowance (XZ_IN_PROCESS_MEMORY), so each finds room when it opens its file.
let tinyXzChecks = 0
const TINY_XZ_CHECKS = 8
const TINY_XZ_MAX_NAR = 256 * 1024

function verifiesInProcess(compression: string, fileBytes: number, narSize: number): boolean {
  if (fileBytes > IN_PROCESS_MAX_BYTES) return false
  if (compression === 'xz') return narSize <= TINY_XZ_MAX_NAR && tinyXzChecks < TINY_XZ_CHECKS && inProcessDecodersInUse() <= tinyXzChecks
  return compression === 'none' || compression === 'zstd'
}

/** What a download needs of its verification, on a thread ({@link Verification}) or in-process. */
interface NarVerifier {
  readonly result: Promise<VerifiedNar>
  grow(written: number): void
  caughtUp(written: number, maxLag: number): Promise<void>
  end(written: number): void
  abort(): void
}

/** Verifies a small NAR file on the main thread, following it as it is written. */
function verifyInProcess(spec: NarFileSpec): NarVerifier {
  const check = new NarFileCheck(spec)
  const xz = spec.compression === 'xz'
  if (xz) tinyXzChecks++
  const result = check
    .run()
    .finally(() => {
      if (xz) tinyXzChecks--
    })
    .then(({ file, nar }) => ({ fileHash: formatNixHash(file.hash), fileSize: file.size, narHash: formatNixHash(nar.hash), narSize: nar.size }))
  result.catch(() => undefined)
  return {
    result,
    grow: (written) => check.grow(written, false),
    caughtUp: () => Promise.resolve(),
    end: (written) => check.grow(written, true),
    abort: () => check.abort(),
  }
}

/** The outcome of a finished download. */
export interface DownloadResult {
  readonly record: NarFileRecord
  readonly durationMs: number
}

/**
 * A running download of `fileName` from one upstream. Emits 'progress' after
 * every chunk written, and settles {@link NarDownload.done}.
 */
export class NarDownload extends EventEmitter {
  /** Bytes written to the temp file so far. */
  written = 0
  /** Bytes received from the upstream so far (ahead of {@link NarDownload.written}). */
  received = 0
  /**
   * 'running' until verified ('verified': every byte may be sent), then
   * committed ('done'); or abandoned ('failed'). A download that fails its
   * commit after verification has still delivered correct bytes.
   */
  state: 'running' | 'verified' | 'done' | 'failed' = 'running'
  /** True once the NAR is verified: its bytes may all be sent, even should the commit fail. */
  verified = false
  /** When it was verified (clients may use it from then on, before the commit). */
  verifiedAt = 0
  error: NarthexError | undefined
  /** The file size clients are told, when the narinfo says it. */
  readonly expectedSize: number | undefined
  readonly tempPath: string
  readonly finalPath: string
  /** Resolves once the NAR is verified and committed to the store; rejects with the reason it was not. */
  readonly done: Promise<DownloadResult>
  readonly #abort = new AbortController()

  constructor(
    readonly fileName: string,
    readonly info: NarInfo,
    readonly sourceUrl: string,
    readonly upstream: Upstream,
    readonly store: Store,
  ) {
    super()
    this.setMaxListeners(0)
    this.expectedSize = info.fileSize
    this.tempPath = store.tempPath(fileName)
    this.finalPath = store.narPath(fileName)
    this.done = this.#run()
    // Listeners attach later or not at all; the rejection is reported through state/error.
    this.done.catch(() => undefined)
  }

  /** Stops the download (shutdown); waiting clients are aborted. */
  abort(reason: NarthexError): void {
    this.#abort.abort(reason)
  }

  /**
   * True once the upstream sent a first byte, or the download has ended either
   * way. Clients may be answered from then on: they only ever read what is on
   * disk, and never the last byte before the commit.
   */
  get started(): boolean {
    return this.received > 0 || this.state !== 'running'
  }

  /** Resolves when {@link NarDownload.started} becomes true. */
  async whenStarted(): Promise<void> {
    while (!this.started) await new Promise((r) => this.once('progress', r))
  }

  async #run(): Promise<DownloadResult> {
    const started = Date.now()
    let fh: FileHandle | undefined
    let firstError: NarthexError | undefined
    // Once the download is aborted (by a failure, or by shutdown), every later error is the
    // abort's consequence and counts as its reason: a shutdown is never taken for bad bytes.
    const context: NarErrorContext = { upstream: this.upstream.name, file: this.tempPath, signal: this.#abort.signal }
    const fail = (err: unknown) => {
      firstError ??= classifyNarError(err, context)
      if (!this.#abort.signal.aborted) this.#abort.abort(firstError)
    }
    try {
      // An uncompressed file is the NAR itself: its FileHash and FileSize must be the NarHash and
      // NarSize, so the bytes are hashed once.
      const single = this.info.compression === 'none' && (!this.info.fileHash || nixHashEquals(this.info.fileHash, this.info.narHash))
      if (single && this.info.fileSize !== undefined && this.info.fileSize !== this.info.narSize) {
        throw new NarthexError('SIZE_MISMATCH', `an uncompressed NAR file of ${this.info.fileSize} bytes cannot hold a ${this.info.narSize}-byte NAR`)
      }
      // The temp file is created while the upstream is asked: the disk is not on the way to the first byte.
      const [opened, asked] = await Promise.allSettled([open(this.tempPath, 'wx', 0o644), this.upstream.openNar(this.sourceUrl, this.#abort.signal)])
      if (opened.status === 'fulfilled') fh = opened.value
      if (asked.status === 'rejected') throw asked.reason
      const res = asked.value
      if (opened.status === 'rejected') {
        res.body.on('error', () => undefined).destroy()
        throw opened.reason
      }
      const file = opened.value
      if (this.info.fileSize !== undefined && res.contentLength !== undefined && res.contentLength !== this.info.fileSize) {
        // An undici body destroyed unread emits 'error' (RequestAbortedError), which kills the
        // process unless someone listens.
        res.body.on('error', () => undefined).destroy()
        throw new NarthexError('SIZE_MISMATCH', `upstream ${this.upstream.name} announces ${res.contentLength} bytes for a ${this.info.fileSize}-byte NAR file`)
      }
      // Hashing, decompression and the NAR checks run on a verification thread that reads the
      // temp file behind the writer; a failure there ends the download at once.
      const tiny = verifiesInProcess(this.info.compression, this.info.fileSize ?? (single ? this.info.narSize : Infinity), this.info.narSize)
      const verification: NarVerifier = tiny
        ? verifyInProcess({ ...this.info, path: this.tempPath, single })
        : new Verification({
            path: this.tempPath,
            compression: this.info.compression,
            fileHash: this.info.fileHash ? formatNixHash(this.info.fileHash) : undefined,
            fileSize: this.info.fileSize,
            narHash: formatNixHash(this.info.narHash),
            narSize: this.info.narSize,
            single,
          })
      verification.result.catch(fail)
      // More bytes than the file can have fail at once, not at the end.
      const maxBytes = this.info.fileSize ?? (single ? this.info.narSize : Number.MAX_SAFE_INTEGER)
      const signal = this.#abort.signal
      let syncing: Promise<void> | undefined
      let unsynced = 0
      // Chunks go to disk; readers and the verifier learn of them once they are there. Chunks that
      // arrive while a write is running go to disk together in one writev.
      const store = (chunks: Buffer[], cb: (err?: Error | null) => void) => {
        const first = this.received === 0
        let bytes = 0
        for (const c of chunks) bytes += c.length
        this.received += bytes
        speed.add(bytes)
        if (first) this.emit('progress')
        if (this.received > maxBytes) {
          cb(new NarthexError('SIZE_MISMATCH', `NAR file from ${this.upstream.name} is larger than the expected ${maxBytes} bytes`))
          return
        }
        file.writev(chunks).then(() => {
          this.written += bytes
          unsynced += bytes
          // Flushed to disk along the way, so the commit's fsync only has the tail left.
          if (unsynced >= SYNC_EVERY && !syncing) {
            unsynced = 0
            // A disk that cannot flush fails the download (and is never an unhandled rejection).
            syncing = file
              .datasync()
              .catch(fail)
              .finally(() => (syncing = undefined))
          }
          verification.grow(this.written)
          this.emit('progress')
          // Never far ahead of the verification (a slow decoder paces the download).
          if (this.written - MAX_UNVERIFIED > 0) verification.caughtUp(this.written, MAX_UNVERIFIED).then(() => cb(), cb)
          else cb()
        }, cb)
      }
      const writer = new Writable({
        highWaterMark: 4 << 20,
        write: (chunk: Buffer, _enc, cb) => store([chunk], cb),
        writev: (chunks, cb) => store(chunks.map((c) => c.chunk as Buffer), cb),
      })
      const speed = this.upstream.watchSpeed(fail)
      await pipeline(res.body, writer, { signal }).catch(fail)
      speed.stop()
      if (firstError) {
        verification.abort()
        throw firstError
      }
      verification.end(this.written)
      const verified = await verification.result.catch((err: unknown) => {
        fail(err)
        throw firstError ?? err
      })
      await syncing
      const record: NarFileRecord = {
        fileHash: verified.fileHash,
        fileSize: verified.fileSize,
        narHash: verified.narHash,
        narSize: verified.narSize,
        compression: this.info.compression,
        storedAt: Date.now(),
      }
      this.verified = true
      this.verifiedAt = Date.now()
      this.state = 'verified'
      this.emit('progress')
      // The store fsyncs and closes the file, grouped with the other commits.
      const handle = fh
      fh = undefined
      await this.store.commitNar(this.tempPath, this.fileName, record, handle)
      this.state = 'done'
      this.emit('progress')
      return { record, durationMs: Date.now() - started }
    } catch (err) {
      const error = firstError ?? classifyNarError(err, context)
      this.error = error
      this.state = 'failed'
      await fh?.close().catch(() => undefined)
      await unlink(this.tempPath).catch(() => undefined)
      this.emit('progress')
      throw error
    }
  }

  /**
   * Opens the file for one client, following the download as it grows. Opened
   * at once, so the temp file cannot be renamed between a check and the open;
   * if it already was, the committed file is the same inode.
   */
  follow(): NarFollower {
    return new NarFollower(this)
  }
}

/**
 * One client's view of a {@link NarDownload}: sends all bytes but the last
 * until the download is verified, then the rest; fails (and so cuts the
 * client off) when the download fails before that.
 */
export class NarFollower {
  readonly #fd: number
  #closed = false

  constructor(readonly download: NarDownload) {
    try {
      this.#fd = openSync(download.tempPath, 'r')
    } catch {
      this.#fd = openSync(download.finalPath, 'r')
    }
  }

  /** The size clients are told, when known. */
  get size(): number | undefined {
    return this.download.expectedSize
  }

  /**
   * Writes the NAR file to `out` as it arrives (does not end `out`), then closes the file.
   * @returns the bytes written.
   * @throws the download's error when it fails.
   */
  async sendTo(out: Writable): Promise<number> {
    const d = this.download
    try {
      return await copyFileTo(out, this.#fd, 0, Number.MAX_SAFE_INTEGER, {
        readable: () => (d.verified ? d.written : Math.max(0, d.written - 1)),
        complete: () => d.verified,
        failure: () => (d.state === 'failed' && !d.verified ? (d.error ?? new NarthexError('UPSTREAM_UNAVAILABLE', 'the download failed')) : undefined),
        changed: () => new Promise((r) => d.once('progress', r)),
      })
    } finally {
      this.close()
    }
  }

  /** Resolves when the download is verified and committed (closing the file); rejects when it fails. */
  async completed(): Promise<void> {
    this.close()
    await this.download.done
  }

  /** Releases the file without sending it. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    try {
      closeSync(this.#fd)
    } catch {
      // already closed
    }
  }
}
