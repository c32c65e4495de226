/**
 * The one NAR file verification: reads a file, hashes it (FileHash/FileSize),
 * decompresses it and checks NarHash, NarSize and the NAR grammar. It follows
 * a file that is still being written (a download, on a verification thread:
 * verify-thread.ts) or reads one that is complete (`narthex verify`, pushes).
 */
import { createHash, type Hash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import type { Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { NarthexError } from '../errors.js'
import { checkFinal, checkSize, NarSink, type Expected, type Measured, type NixHash } from '../protocol/index.js'
import { createDecompressor } from './decompress.js'
import { classifyNarError } from './nar-errors.js'

const READ_CHUNK = 1024 * 1024

/** One read of the file: into which buffer, and how many bytes came. */
interface ChunkRead {
  readonly buf: Buffer
  readonly bytesRead: number
}

/** What a NAR file must be (its narinfo's values); FileHash and FileSize may be unknown. */
export interface NarFileSpec {
  readonly path: string
  readonly compression: string
  readonly fileHash?: NixHash | undefined
  readonly fileSize?: number | undefined
  readonly narHash: NixHash
  readonly narSize: number
  /** Uncompressed and FileHash = NarHash: the file is the NAR, hashed once. */
  readonly single: boolean
}

/** The measured hashes and sizes of a verified NAR file. */
export interface CheckedNarFile {
  readonly file: Measured
  readonly nar: Measured
}

/** Options of a {@link NarFileCheck}. */
export interface NarFileCheckOptions {
  /** Called each time the check has read another `readReportBytes` of the file. */
  readonly onRead?: ((pos: number) => void) | undefined
  readonly readReportBytes?: number | undefined
}

/**
 * The verification of one NAR file. For a file still being written, call
 * {@link NarFileCheck.grow} as it grows; for a complete one,
 * {@link NarFileCheck.whole}. {@link NarFileCheck.run} reads what is there,
 * waits for more until the end, and resolves with the measured values.
 */
export class NarFileCheck {
  #available = 0
  #ended = false
  #whole = false
  #aborted = false
  #wake: (() => void) | undefined

  constructor(
    readonly spec: NarFileSpec,
    readonly options: NarFileCheckOptions = {},
  ) {}

  /** The file now holds `written` bytes; `ended`: it is complete. */
  grow(written: number, ended: boolean): void {
    this.#available = Math.max(this.#available, written)
    if (ended) this.#ended = true
    this.#poke()
  }

  /** The file is complete as it is on disk (its size is read when it is opened). */
  whole(): void {
    this.#whole = true
    this.#poke()
  }

  /** Gives up: {@link NarFileCheck.run} rejects with SHUTTING_DOWN. */
  abort(): void {
    this.#aborted = true
    this.#poke()
  }

  #poke(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  /**
   * Verifies the file.
   * @throws NarthexError HASH_MISMATCH, SIZE_MISMATCH, NAR_INVALID (corrupt
   *   compression included), COMPRESSION_UNSUPPORTED, STORE_IO when the file
   *   cannot be read, SHUTTING_DOWN after {@link NarFileCheck.abort}.
   */
  async run(): Promise<CheckedNarFile> {
    const { spec } = this
    let fh: FileHandle | undefined
    let decompressor: Duplex | undefined
    let narSink: NarSink | undefined
    try {
      fh = await open(spec.path, 'r')
      if (this.#whole) this.grow((await fh.stat()).size, true)
      const expectedFile: Expected = { ...(spec.fileHash ? { hash: spec.fileHash } : {}), ...(spec.fileSize !== undefined ? { size: spec.fileSize } : {}) }
      const fileAlgorithm = spec.fileHash?.algorithm ?? 'sha256'
      const fileHash: Hash | undefined = spec.single ? undefined : createHash(fileAlgorithm)
      const sink = new NarSink({ hash: spec.narHash, size: spec.narSize })
      narSink = sink
      // Uncompressed: the bytes go straight to the NarSink's synchronous check, through one
      // reused buffer. Otherwise the decompressor's output goes to the NarSink; the first error
      // of either ends the check.
      const plain = spec.compression === 'none'
      const decoder = plain ? undefined : createDecompressor(spec.compression, spec.fileSize, spec.narSize)
      decompressor = decoder
      // Decoders fail with Errors of their own; anything else is wrapped so it can be thrown as is.
      let failure: Error | undefined
      let verifying: Promise<void> = Promise.resolve()
      let drained: DrainWait | undefined
      if (decoder) {
        drained = new DrainWait(decoder)
        verifying = pipeline(decoder, sink).catch((err: unknown) => {
          failure ??= err instanceof Error ? err : new Error(String(err))
        })
      }
      // Two buffers taken in turn (uncompressed: the chunk is checked at once and not kept), so the
      // next chunk is read while this one is hashed: the copy out of the page cache (a thread-pool
      // job) and the hashing overlap, which halves the time of a large file. A decoder may keep
      // what it is written, so it gets a fresh buffer per read.
      const reused = plain ? [Buffer.allocUnsafe(READ_CHUNK), Buffer.allocUnsafe(READ_CHUNK)] : undefined
      let turn = 0
      const handle = fh
      const readAt = (at: number): Promise<ChunkRead> => {
        const len = Math.min(READ_CHUNK, this.#available - at)
        const buf = reused ? reused[turn++ & 1] : Buffer.allocUnsafe(len)
        const read = handle.read(buf, 0, len, at).then(({ bytesRead }) => ({ buf, bytesRead }))
        // Left unawaited when the check fails first (the file closes after it settles).
        read.catch(() => undefined)
        return read
      }
      /** The read of the bytes at `pos`, started before the previous chunk was checked. */
      let ahead: Promise<ChunkRead> | undefined
      const reportStep = this.options.readReportBytes ?? Number.MAX_SAFE_INTEGER
      let pos = 0
      let reported = 0
      for (;;) {
        if (failure) throw failure
        if (this.#aborted) throw new NarthexError('SHUTTING_DOWN', 'verification aborted')
        if (decoder?.destroyed) {
          // The pipeline's failure is recorded once its promise settles.
          await verifying
          throw failure ?? new NarthexError('NAR_INVALID', 'the decoder stopped early')
        }
        if (pos < this.#available) {
          const read = ahead ?? readAt(pos)
          ahead = undefined
          const { buf, bytesRead } = await read
          if (bytesRead === 0) throw new NarthexError('STORE_IO', `${spec.path} ended at byte ${pos}`)
          const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead)
          pos += bytesRead
          if (pos < this.#available) ahead = readAt(pos)
          if (pos - reported >= reportStep) {
            reported = pos
            this.options.onRead?.(pos)
          }
          checkSize('NAR file', pos, expectedFile)
          fileHash?.update(chunk)
          if (!decoder) sink.check(chunk)
          else if (!decoder.write(chunk)) await drained!.wait()
          continue
        }
        if (this.#ended) break
        await new Promise<void>((r) => (this.#wake = r))
      }
      if (decoder) {
        decoder.end()
        await verifying
        // Set by the pipeline's handler meanwhile (control flow analysis cannot see that).
        const failed = failure as Error | undefined
        if (failed) throw failed
      }
      const nar = decoder ? sink.result : sink.finish()
      if (!nar) throw new NarthexError('NAR_INVALID', 'the NAR did not verify')
      // Uncompressed and hashed once, the file is the NAR.
      const file = fileHash ? { hash: { algorithm: fileAlgorithm, digest: fileHash.digest() }, size: pos } : nar
      checkFinal('NAR file', file, expectedFile)
      return { file, nar }
    } catch (err) {
      throw classifyNarError(err, { file: spec.path })
    } finally {
      // Ends a decoder child process that is still running (a failure or an abort).
      decompressor?.destroy()
      narSink?.destroy()
      await fh?.close().catch(() => undefined)
    }
  }
}

/**
 * Waits for a writable side to drain, through one pair of listeners for the
 * whole stream (a pair per wait would pile up: one of them is always left).
 */
class DrainWait {
  #wake: (() => void) | undefined

  constructor(readonly stream: Duplex) {
    const poke = () => {
      const wake = this.#wake
      this.#wake = undefined
      wake?.()
    }
    stream.on('drain', poke)
    stream.on('close', poke)
  }

  /** Resolves once the stream drained or closed. */
  wait(): Promise<void> {
    if (this.stream.destroyed || !this.stream.writableNeedDrain) return Promise.resolve()
    return new Promise<void>((r) => (this.#wake = r))
  }
}

/**
 * Verifies a complete NAR file on disk against `spec`.
 * @returns the measured file and NAR hashes and sizes.
 * @throws NarthexError as {@link NarFileCheck.run}.
 */
export function checkNarFile(spec: NarFileSpec): Promise<CheckedNarFile> {
  const check = new NarFileCheck(spec)
  check.whole()
  return check.run()
}
