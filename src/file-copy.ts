/**
 * Copies stored NAR files (or a temp file still being written) into a
 * Writable, usually an HTTP response, through a few reused buffers.
 *
 * `fs.createReadStream` allocates a fresh buffer per chunk; at gigabytes per
 * second those short-lived buffers are external memory that V8 gives back only
 * in full collections, which then run every few dozen megabytes and halve the
 * throughput (bench/RESULTS.md). Here each copy borrows at most
 * {@link BUFFERS_PER_COPY} buffers ({@link BUFFERS_PER_FOLLOW} when it follows a
 * download) from a small process-wide pool, and a buffer
 * is read into again only once the socket has taken its bytes (the write
 * callback), so memory per client is bounded and nothing is left for the GC.
 */
import { read as fsRead } from 'node:fs'
import type { Writable } from 'node:stream'

/**
 * Bytes per read and per socket write of a stored file. Two of 512 KiB serve a
 * warm 512 MiB NAR at 2.31 GB/s here, four of 256 KiB (the same memory per
 * client) at 1.98 side by side, four of 64 KiB at 1.1 (bench/RESULTS.md, scenario 2).
 */
export const COPY_CHUNK = 512 * 1024
/**
 * Bytes per read of a file still being downloaded, at most: a client at the
 * head of the download reads what has come since its last read; one behind it
 * catches up in reads of up to 256 KiB (a quarter of the operations
 * that 64 KiB reads took: 64 clients of one cold 512 MiB NAR finish in half
 * the time, a lone client about a tenth sooner, bench/RESULTS.md).
 */
export const FOLLOW_CHUNK = 256 * 1024
/** Buffers in flight per copy of a stored file: one being read while the other drains to the socket. */
export const BUFFERS_PER_COPY = 2
/**
 * Buffers in flight per copy of a file still being downloaded: many clients may
 * follow one download, and each holds at most this many {@link FOLLOW_CHUNK}s.
 */
export const BUFFERS_PER_FOLLOW = 2
// Memory kept for reuse across copies, per buffer size; beyond it buffers are dropped.
const POOL_MAX_BYTES = 8 * 1024 * 1024

const pools = new Map<number, Buffer[]>()

function borrow(size: number, chunk: number): Buffer {
  // Small files get a buffer of their own size; they are not worth a pooled chunk. A file of more
  // than half a chunk takes one (read in one go): a buffer its size would be garbage per request.
  if (size <= chunk / 2) return Buffer.allocUnsafe(size)
  return pools.get(chunk)?.pop() ?? Buffer.allocUnsafeSlow(chunk)
}

function giveBack(buf: Buffer, chunk: number): void {
  if (buf.length !== chunk) return
  let pool = pools.get(chunk)
  if (!pool) pools.set(chunk, (pool = []))
  if ((pool.length + 1) * chunk <= POOL_MAX_BYTES) pool.push(buf)
}

/** A file that is still growing: how far it may be read, and how to wait for more. */
export interface GrowingFile {
  /** Bytes that may be read now. */
  readable(): number
  /** True once {@link GrowingFile.readable} is the file's final size. */
  complete(): boolean
  /** Why the file will never complete, once that is known: the copy then fails with it. */
  failure(): Error | undefined
  /** Resolves at the next change of the three above. */
  changed(): Promise<void>
}

function readAt(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buf, 0, len, pos, (err, n) => (err ? reject(err) : resolve(n))))
}

/**
 * Writes bytes `start` (inclusive) to `end` (exclusive) of the open file `fd`
 * to `out`, or, with `growing`, from `start` as far as the file grows. Does not
 * end `out`. Stops early when `out` is destroyed (a client gone).
 * @returns the bytes handed to `out`.
 * @throws the growing file's failure, or a read error.
 */
export async function copyFileTo(out: Writable, fd: number, start: number, end: number, growing?: GrowingFile): Promise<number> {
  const chunkSize = growing ? FOLLOW_CHUNK : COPY_CHUNK
  const maxBuffers = growing ? BUFFERS_PER_FOLLOW : BUFFERS_PER_COPY
  let pos = start
  let sent = 0
  let inFlight = 0
  let writeError: Error | undefined
  const free: Buffer[] = []
  let released: (() => void) | undefined
  const waitForRelease = () => new Promise<void>((r) => (released = r))
  // A destroyed socket may never call back for writes still queued: stop waiting then.
  const onClose = () => {
    released?.()
    released = undefined
  }
  out.on('close', onClose)
  try {
    for (;;) {
      if (out.destroyed || writeError) break
      let limit = end
      if (growing) {
        const failure = growing.failure()
        if (failure) throw failure
        limit = growing.readable()
        if (pos >= limit) {
          if (growing.complete()) break
          await growing.changed()
          continue
        }
      } else if (pos >= end) break
      let buf = free.pop()
      if (!buf) {
        if (inFlight >= maxBuffers) {
          await waitForRelease()
          continue
        }
        buf = borrow(growing ? chunkSize : Math.min(chunkSize, end - pos), chunkSize)
      }
      const n = await readAt(fd, buf, Math.min(buf.length, limit - pos), pos)
      if (n === 0) throw new Error(`the file ended at byte ${pos}, before ${limit}`)
      pos += n
      sent += n
      inFlight++
      const chunk = buf
      out.write(n === chunk.length ? chunk : chunk.subarray(0, n), (err) => {
        inFlight--
        if (err) writeError ??= err
        free.push(chunk)
        released?.()
        released = undefined
      })
    }
    // Every buffer must be back (written or failed) before it is reused elsewhere.
    while (inFlight > 0 && !out.destroyed) await waitForRelease()
    return sent
  } finally {
    out.off('close', onClose)
    if (inFlight === 0) for (const b of free) giveBack(b, chunkSize)
  }
}
