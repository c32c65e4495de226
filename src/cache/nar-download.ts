/**
 * One upstream download of a NAR file, shared by every client that asks for it
 * while it runs.
 *
 * The bytes go to a temp file as they arrive while FileHash/FileSize are hashed
 * and, through the decompressor, NarHash/NarSize and the NAR grammar are
 * checked. Clients read the temp file behind the writer ({@link TailReader}), so
 * each has its own pace and memory stays flat however many there are, and the
 * slowest client never slows the download. The last byte is held back from
 * every client until the whole NAR is verified and committed: a NAR that fails
 * verification can never reach a client as a complete response.
 *
 * Policy on client disconnects: the download goes on. It feeds the cache, and
 * other clients may be waiting or may ask soon.
 */
import { EventEmitter } from 'node:events'
import { closeSync, openSync, read as fsRead } from 'node:fs'
import { open, unlink, type FileHandle } from 'node:fs/promises'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { NarthexError } from '../errors.js'
import { formatNixHash, HashingPassThrough, NarSink, type NarInfo } from '../protocol/index.js'
import { createDecompressor, type NarFileRecord, type Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'

/** The outcome of a finished download. */
export interface DownloadResult {
  readonly record: NarFileRecord
  readonly durationMs: number
}

function classify(err: unknown, upstream: string): NarthexError {
  if (err instanceof NarthexError) return err
  const e = err as NodeJS.ErrnoException & { code?: string }
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || e?.code === 'EIO' || e?.code === 'EROFS') {
    return new NarthexError('STORE_IO', `cannot write the NAR: ${e.code}`, { cause: err })
  }
  if (e?.code === 'UND_ERR_BODY_TIMEOUT') {
    return new NarthexError('UPSTREAM_TIMEOUT', `upstream ${upstream} stopped sending the NAR`, { cause: err, detail: { upstream } })
  }
  if (typeof e?.code === 'string' && e.code.startsWith('UND_ERR') || e?.code === 'ECONNRESET' || e?.message === 'terminated') {
    return new NarthexError('UPSTREAM_UNAVAILABLE', `download from ${upstream} broke off: ${e.message}`, { cause: err, detail: { upstream } })
  }
  // Decoder libraries (lzma-native, zstd-napi, zlib) fail with their own errors on corrupt input.
  return new NarthexError('NAR_INVALID', `the NAR from ${upstream} is corrupt: ${e?.message ?? String(err)}`, { cause: err, detail: { upstream } })
}

/**
 * A running download of `fileName` from one upstream. Emits 'progress' after
 * every chunk written, and settles {@link NarDownload.done}.
 */
export class NarDownload extends EventEmitter {
  /** Bytes written to the temp file so far. */
  written = 0
  /** 'running' until committed ('done') or abandoned ('failed'). */
  state: 'running' | 'done' | 'failed' = 'running'
  error: NarthexError | undefined
  /** The file size clients are told, when the narinfo says it. */
  readonly expectedSize: number | undefined
  readonly tempPath: string
  readonly finalPath: string
  /** Resolves once the NAR is verified and stored; rejects with the reason it was not. */
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

  /** True once at least one byte is on disk, or the download has ended either way. */
  get started(): boolean {
    return this.written > 0 || this.state !== 'running'
  }

  /** Resolves when {@link NarDownload.started} becomes true. */
  async whenStarted(): Promise<void> {
    while (!this.started) await new Promise((r) => this.once('progress', r))
  }

  async #run(): Promise<DownloadResult> {
    const started = Date.now()
    let fh: FileHandle | undefined
    let firstError: NarthexError | undefined
    const fail = (err: unknown) => {
      firstError ??= classify(err, this.upstream.name)
      if (!this.#abort.signal.aborted) this.#abort.abort(firstError)
    }
    try {
      fh = await open(this.tempPath, 'wx', 0o644)
      const res = await this.upstream.openNar(this.sourceUrl, this.#abort.signal)
      if (this.info.fileSize !== undefined && res.contentLength !== undefined && res.contentLength !== this.info.fileSize) {
        // An undici body destroyed unread emits 'error' (RequestAbortedError), which kills the
        // process unless someone listens.
        res.body.on('error', () => undefined).destroy()
        throw new NarthexError('SIZE_MISMATCH', `upstream ${this.upstream.name} announces ${res.contentLength} bytes for a ${this.info.fileSize}-byte NAR file`)
      }
      const fileCheck = new HashingPassThrough(
        { ...(this.info.fileHash ? { hash: this.info.fileHash } : {}), ...(this.info.fileSize !== undefined ? { size: this.info.fileSize } : {}) },
        'NAR file',
      )
      const decompressor = createDecompressor(this.info.compression, this.info.fileSize)
      const narSink = new NarSink({ hash: this.info.narHash, size: this.info.narSize })
      const signal = this.#abort.signal
      const file = fh
      // Writes each chunk to disk, tells readers, then feeds the decompressor,
      // waiting for both: disk and verification pace the download.
      const writer = new Writable({
        highWaterMark: 1 << 20,
        write: (chunk: Buffer, _enc, cb) => {
          file.write(chunk).then(
            () => {
              this.written += chunk.length
              this.emit('progress')
              if (decompressor.write(chunk)) cb()
              else decompressor.once('drain', () => cb())
            },
            (err) => cb(err as Error),
          )
        },
        final: (cb) => {
          decompressor.end()
          cb()
        },
      })
      const verifying = pipeline(decompressor, narSink, { signal }).catch(fail)
      await pipeline(res.body, this.upstream.speedGuard(), fileCheck, writer, { signal }).catch(fail)
      await verifying
      if (firstError) throw firstError
      const file_ = fileCheck.result!
      const nar = narSink.result!
      await fh.sync()
      await fh.close()
      fh = undefined
      const record: NarFileRecord = {
        fileHash: formatNixHash(file_.hash),
        fileSize: file_.size,
        narHash: formatNixHash(nar.hash),
        narSize: nar.size,
        compression: this.info.compression,
        storedAt: Date.now(),
      }
      await this.store.commitNar(this.tempPath, this.fileName, record)
      this.state = 'done'
      this.emit('progress')
      return { record, durationMs: Date.now() - started }
    } catch (err) {
      const error = firstError ?? classify(this.#abort.signal.aborted ? (this.#abort.signal.reason ?? err) : err, this.upstream.name)
      this.error = error
      this.state = 'failed'
      await fh?.close().catch(() => undefined)
      await unlink(this.tempPath).catch(() => undefined)
      this.emit('progress')
      throw error
    }
  }

  /** A stream of the file's bytes for one client, following the download as it grows. */
  createReader(): Readable {
    return new TailReader(this)
  }
}

// Small enough that many clients following one download hold little memory each.
const READ_CHUNK = 64 * 1024

/**
 * Reads a file while a {@link NarDownload} writes it: up to all bytes but the
 * last until the download is committed, then to the end. Errors (and so aborts
 * the client's response) when the download fails.
 */
class TailReader extends Readable {
  readonly #download: NarDownload
  #fd: number
  #pos = 0
  #waiting = false

  constructor(download: NarDownload) {
    super({ highWaterMark: READ_CHUNK })
    this.#download = download
    // Opened synchronously so the temp file cannot be renamed between a check
    // and the open; if it already was, the committed file is the same inode.
    try {
      this.#fd = openSync(download.tempPath, 'r')
    } catch {
      this.#fd = openSync(download.finalPath, 'r')
    }
  }

  override _read(size: number): void {
    const d = this.#download
    if (d.state === 'failed') {
      this.destroy(d.error)
      return
    }
    const limit = d.state === 'done' ? d.written : d.written - 1
    if (this.#pos < limit) {
      const len = Math.min(size, READ_CHUNK, limit - this.#pos)
      const buf = Buffer.allocUnsafe(len)
      fsRead(this.#fd, buf, 0, len, this.#pos, (err, n) => {
        if (err) return this.destroy(err)
        this.#pos += n
        this.push(n === len ? buf : buf.subarray(0, n))
      })
      return
    }
    if (d.state === 'done') {
      this.push(null)
      return
    }
    if (!this.#waiting) {
      this.#waiting = true
      d.once('progress', () => {
        this.#waiting = false
        if (!this.destroyed) this._read(size)
      })
    }
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    try {
      closeSync(this.#fd)
    } catch {
      // already closed
    }
    cb(err)
  }
}
