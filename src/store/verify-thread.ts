/**
 * The body of a verification thread (see verifier.ts). It follows NAR files
 * while the main thread writes them to disk: reads what is written, hashes it
 * (FileHash/FileSize), decompresses it and checks NarHash, NarSize and the NAR
 * grammar, then reports the result. Several files at once, each its own job.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { parentPort } from 'node:worker_threads'
import { createHash, type Hash } from 'node:crypto'
import { once } from 'node:events'
import { pipeline } from 'node:stream/promises'
import { NarthexError } from '../errors.js'
import { checkFinal, checkSize, formatNixHash, NarSink, parseNixHash, type Expected } from '../protocol/index.js'
import { createDecompressor } from './decompress.js'
import type { FromVerifier, ToVerifier, VerifyJob } from './verifier.js'

const READ_CHUNK = 1024 * 1024
// How often the main thread hears how far a job has read (it paces its download by it).
const READ_REPORT_STEP = 4 * 1024 * 1024

class Job {
  #available = 0
  #ended = false
  #aborted = false
  #wake: (() => void) | undefined

  constructor(readonly spec: VerifyJob) {}

  grow(written: number, ended: boolean): void {
    this.#available = Math.max(this.#available, written)
    if (ended) this.#ended = true
    this.#poke()
  }

  abort(): void {
    this.#aborted = true
    this.#poke()
  }

  #poke(): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  async run(): Promise<FromVerifier> {
    const { spec } = this
    let fh: FileHandle | undefined
    const streams: Array<{ destroy(): void }> = []
    try {
      fh = await open(spec.path, 'r')
      const expectedHash = spec.fileHash ? parseNixHash(spec.fileHash) : undefined
      const expectedFile: Expected = { ...(expectedHash ? { hash: expectedHash } : {}), ...(spec.fileSize !== undefined ? { size: spec.fileSize } : {}) }
      const fileAlgorithm = expectedHash?.algorithm ?? 'sha256'
      const fileHash: Hash | undefined = spec.single ? undefined : createHash(fileAlgorithm)
      const narSink = new NarSink({ hash: parseNixHash(spec.narHash), size: spec.narSize })
      // Uncompressed: the bytes go straight to the NarSink's synchronous check, through one
      // reused buffer. Otherwise the decompressor's output goes to the NarSink; the first error
      // of either ends the job.
      const plain = spec.compression === 'none'
      const decompressor = plain ? undefined : createDecompressor(spec.compression, spec.fileSize)
      let failure: unknown
      let verifying: Promise<void> = Promise.resolve()
      if (decompressor) {
        streams.push(decompressor, narSink)
        verifying = pipeline(decompressor, narSink).catch((err: unknown) => {
          failure ??= err
        })
      }
      const reused = plain ? Buffer.allocUnsafe(READ_CHUNK) : undefined
      let pos = 0
      let reported = 0
      for (;;) {
        if (failure) throw failure
        if (this.#aborted) throw new NarthexError('SHUTTING_DOWN', 'verification aborted')
        if (pos < this.#available) {
          const len = Math.min(READ_CHUNK, this.#available - pos)
          const buf = reused ?? Buffer.allocUnsafe(len)
          const { bytesRead } = await fh.read(buf, 0, len, pos)
          if (bytesRead === 0) throw new NarthexError('STORE_IO', `the temp file ended at byte ${pos}`)
          const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead)
          pos += bytesRead
          if (pos - reported >= READ_REPORT_STEP) {
            reported = pos
            parentPort!.postMessage({ type: 'read', id: spec.id, pos } satisfies FromVerifier)
          }
          checkSize('NAR file', pos, expectedFile)
          fileHash?.update(chunk)
          if (!decompressor) narSink.check(chunk)
          else if (!decompressor.write(chunk)) await Promise.race([once(decompressor, 'drain'), once(decompressor, 'close')])
          continue
        }
        if (this.#ended) break
        await new Promise<void>((r) => (this.#wake = r))
      }
      if (decompressor) {
        decompressor.end()
        await verifying
        if (failure) throw failure
      }
      const nar = decompressor ? narSink.result : narSink.finish()
      if (!nar) throw new NarthexError('NAR_INVALID', 'the NAR did not verify')
      // Uncompressed and hashed once, the file is the NAR.
      const file = fileHash ? { hash: { algorithm: fileAlgorithm, digest: fileHash.digest() }, size: pos } : nar
      checkFinal('NAR file', file, expectedFile)
      return {
        type: 'done',
        id: spec.id,
        fileHash: formatNixHash(file.hash),
        fileSize: file.size,
        narHash: formatNixHash(nar.hash),
        narSize: nar.size,
      }
    } catch (err) {
      return toError(spec.id, err)
    } finally {
      // Ends a decoder child process that is still running (a failure or an abort).
      for (const s of streams) s.destroy()
      await fh?.close().catch(() => undefined)
    }
  }
}

function toError(id: number, err: unknown): FromVerifier {
  if (err instanceof NarthexError) return { type: 'error', id, code: err.code, message: err.message }
  const e = err as NodeJS.ErrnoException
  if (e?.code === 'EIO' || e?.code === 'ENOENT') return { type: 'error', id, code: 'STORE_IO', message: `cannot read the temp file: ${e.message}` }
  // Decoder libraries (lzma-native, zstd-napi, zlib) fail with their own errors on corrupt input.
  return { type: 'error', id, code: 'NAR_INVALID', message: `the NAR is corrupt: ${e?.message ?? String(err)}` }
}

const jobs = new Map<number, Job>()

parentPort?.on('message', (msg: ToVerifier) => {
  switch (msg.type) {
    case 'start': {
      const job = new Job(msg.job)
      jobs.set(msg.job.id, job)
      void job.run().then((result) => {
        jobs.delete(msg.job.id)
        parentPort!.postMessage(result)
      })
      break
    }
    case 'grow':
      jobs.get(msg.id)?.grow(msg.written, msg.ended)
      break
    case 'abort':
      jobs.get(msg.id)?.abort()
      break
  }
})
