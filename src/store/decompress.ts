/**
 * Decompression of NAR files as streams, for every compression upstreams use.
 * The choice per format was measured (bench/decompress/README.md): large xz,
 * large zstd and bzip2 files go through the system's `xz`, `zstd` and `bzip2`
 * in a child process (the reference decoders, on the other core, never
 * stalling the event loop); small xz files through lzma-native in libuv's
 * thread pool, as many at a time as {@link XZ_IN_PROCESS_MEMORY} allows; small
 * zstd files through zstd-napi in-process (no process start-up); brotli and
 * gzip through node:zlib's thread pool. Without the commands, the bindings
 * (lzma-native, zstd-napi) decode everything.
 */
import { spawn } from 'node:child_process'
import { accessSync, constants, statSync } from 'node:fs'
import type { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { delimiter, join } from 'node:path'
import { Duplex, PassThrough } from 'node:stream'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import { NarthexError } from '../errors.js'

const require = createRequire(import.meta.url)

const commandCache = new Map<string, boolean>()

/**
 * True when `cmd` is an executable file in a directory of PATH (looked up once per process).
 * A lookup, not a trial run: three `--version` runs cost tens of milliseconds of every start.
 * A command found but not runnable fails when used, with COMPRESSION_UNSUPPORTED.
 */
function hasCommand(cmd: string): boolean {
  let ok = commandCache.get(cmd)
  if (ok === undefined) {
    ok = (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && isExecutable(join(dir, cmd)))
    commandCache.set(cmd, ok)
  }
  return ok
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK)
    return statSync(file).isFile()
  } catch {
    return false
  }
}

/**
 * A Duplex around a child process filter (`xz -dc`): bytes written go to its
 * stdin, its stdout is readable. A non-zero exit (corrupt input) errors the
 * stream with NAR_INVALID and the decoder's message; a decoder that cannot be
 * started (gone since it was found, or not executable) with
 * COMPRESSION_UNSUPPORTED: that says nothing about the data.
 */
function spawnFilter(cmd: string, args: string[], what: string): Duplex {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let spawnError: Error | undefined
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d
  })
  // The readable side ends only once the decoder has exited 0: on corrupt input `xz` writes
  // what it decoded up to the fault, and its stdout ends before its exit status is known, so
  // ending with stdout would let a pipeline succeed and the error arrive too late.
  const stdout = new PassThrough({ highWaterMark: 64 * 1024 })
  child.stdout.pipe(stdout, { end: false })
  const duplex = Duplex.from({ writable: child.stdin, readable: stdout })
  // An early exit closes stdin under a pending write: that EPIPE is not the real error.
  child.stdin.on('error', () => undefined)
  // A failed spawn emits 'error' (then 'close' with a negative code).
  child.on('error', (err) => {
    spawnError ??= err
    if (!duplex.destroyed) {
      duplex.destroy(new NarthexError('COMPRESSION_UNSUPPORTED', `cannot run ${cmd} to decompress ${what} NARs: ${err.message}`, { cause: err }))
    }
  })
  child.on('close', (code, signal) => {
    if (code === 0) stdout.end()
    else if (!duplex.destroyed && !spawnError) {
      duplex.destroy(
        new NarthexError('NAR_INVALID', `${what} data is corrupt: ${stderr.trim() || `${cmd} exited with ${code ?? signal}`}`),
      )
    }
  })
  duplex.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return duplex
}

/** Compression methods narthex can decompress on this machine. */
export function supportedCompressions(): string[] {
  const out = ['none', 'zstd', 'br', 'gzip', 'xz']
  if (hasCommand('bzip2')) out.push('bzip2')
  if (hasCommand('lzip')) out.push('lzip')
  if (hasCommand('lz4')) out.push('lz4')
  return out
}

/**
 * Below this compressed size, zstd is decoded in-process: starting a child
 * process (about 5 ms) costs more than decoding a small NAR (bench/decompress/
 * README.md). Above it the child process wins: zstd-napi's synchronous chunks
 * would stall the event loop by tens of milliseconds on large files.
 */
export const IN_PROCESS_MAX_BYTES = 512 * 1024

/**
 * Up to this compressed size, an xz file is decoded in-process by lzma-native
 * when a slot is free ({@link XZ_IN_PROCESS_MAX_DECODERS}): spawning `xz` is a
 * synchronous fork/exec on the event loop. Measured per NAR (sequential
 * decode + sha256, 64 KiB input chunks, main-thread time as event-loop
 * utilisation), child against in-process: 4.1 against 0.8 ms at 5 KB,
 * 6.1 against 3.0 ms at 52 KB, 12.1 against 9.4 ms at 228 KB; at 532 KB
 * they are level (17.6 ms). Total CPU (node plus child) is level near 200 KB;
 * above it lzma-native (liblzma 5.2) costs more and holds its slot longer
 * (35 ms at 228 KB, 76 ms at 532 KB, against 26 and 51 ms through `xz`).
 */
export const XZ_IN_PROCESS_MAX_BYTES = 256 * 1024

/**
 * In-process xz decoders a JavaScript thread runs at a time when the NARs'
 * sizes are unknown; the others go to `xz` children. Each decoder counts
 * against a per-thread allowance of {@link XZ_IN_PROCESS_MEMORY} at its
 * NarSize when the caller knows it, at most {@link XZ_DICTIONARY_BYTES}
 * (unknown: the whole dictionary), so two of unknown size fill it and small
 * NARs of known size share it many at a time: a 5 KB NAR's decode costs under
 * 1 ms, its `xz` child 4-6 ms of fork/exec and start-up, and with NAR
 * prefetch a cold closure has ten or more small NARs under verification at
 * once. The count lives in this module and each verification thread (up to
 * four, verifier.ts) loads its own copy, plus the main thread's for pushes
 * and the smallest downloads. liblzma allocates the header's whole dictionary
 * (8 MiB at Nix's default preset) per decoder, and memory counts as the
 * decoder touches it, up to the decompressed size: 50 concurrent in-process
 * decodes of a 1.2 MB NAR added 127 MiB of RSS at peak, 8 MB NARs 451 MiB.
 * With two in the process, the peak stayed within 4 and 20 MiB of the `xz`
 * path; eight may hold four times that. liblzma frees the dictionary at the
 * end, but glibc keeps freed memory in its per-thread arenas: one after
 * another, in-process decodes of 8 MB NARs level off about 50 MiB above the
 * `xz` path (the same after 25 files as after 300). All of them share libuv's
 * one pool of four threads with file system work and DNS, each holding a
 * pool thread only while it decodes one {@link XZ_SLICE_BYTES} slice.
 */
export const XZ_IN_PROCESS_MAX_DECODERS = 2

/** The dictionary of Nix's default xz preset: what a decoder may touch at most, whatever the NAR's size. */
const XZ_DICTIONARY_BYTES = 8 * 1024 * 1024

/**
 * The per-thread allowance of in-process xz decoders, counted at their
 * NarSize (see {@link XZ_IN_PROCESS_MAX_DECODERS}).
 */
export const XZ_IN_PROCESS_MEMORY = XZ_IN_PROCESS_MAX_DECODERS * XZ_DICTIONARY_BYTES

/** At most this many in-process xz decoders per thread, however small: they queue for libuv's four pool threads. */
const XZ_IN_PROCESS_MAX_SMALL = 32

/**
 * lzma-native decodes each input chunk whole before handing any output back,
 * however much it expands to: 64 KiB of xz can hold 450 MB of zeros. Feeding it
 * slices of this size bounds that burst to about 27 MB (4 KiB of such a file
 * decompresses to 27.5 MB), and lets the consumer's backpressure act between
 * slices, as it does on an `xz` child through its pipe. Larger slices save
 * under 2 ms of main-thread time per 200 KB file.
 */
const XZ_SLICE_BYTES = 4 * 1024

let xzInProcess = 0
let xzInProcessMemory = 0

/** How many in-process xz decoders hold a slot now (for tests and metrics). */
export function inProcessDecodersInUse(): number {
  return xzInProcess
}

/** The part of lzma-native's decoder (a readable-stream@3 Transform) used here. */
interface LzmaDecoder extends EventEmitter {
  write(chunk: Buffer, cb: (err?: Error | null) => void): boolean
  end(): void
  destroy(): void
  /** Ends liblzma's stream, freeing its dictionary now rather than when collected. */
  cleanup(): void
}

/**
 * An xz decoder in libuv's thread pool (lzma-native), as a core Duplex:
 * lzma-native's own readable-stream@3 object can leave `pipeline()` pending
 * forever (bench/decompress/README.md, finding 6). Input goes to liblzma in
 * {@link XZ_SLICE_BYTES} slices, one at a time, and only while the readable
 * side wants data. Corrupt or truncated input errors it with NAR_INVALID.
 * `onRelease` runs exactly once, when liblzma's state is freed: at the end
 * of the output, on an error, or when the stream is destroyed.
 */
class XzInProcessDecoder extends Duplex {
  readonly #decoder: LzmaDecoder
  readonly #onRelease: (() => void) | undefined
  #released = false
  #input: { chunk: Buffer; offset: number; cb: (err?: Error | null) => void } | undefined
  #feeding = false
  #wantsData = true
  #finalCb: ((err?: Error | null) => void) | undefined

  constructor(onRelease?: () => void) {
    super()
    this.#onRelease = onRelease
    // No memlimit, like Nix's decoder and `xz -dc`: a limit would refuse valid NARs with large
    // dictionaries, and would not save memory, since only the pages liblzma writes count (50
    // concurrent decodes of a NAR whose header asks for a 4 GiB dictionary add no RSS).
    this.#decoder = (require('lzma-native') as { createDecompressor(): LzmaDecoder }).createDecompressor()
    this.#decoder.on('data', (data: Buffer) => {
      if (!this.push(data)) this.#wantsData = false
    })
    // lzma-native emits 'error' before the 'end' its push(null) schedules (sometimes twice).
    this.#decoder.on('error', (err: Error) => {
      this.#release()
      this.destroy(new NarthexError('NAR_INVALID', `xz data is corrupt: ${err.message}`, { cause: err }))
    })
    this.#decoder.on('end', () => {
      this.#release()
      if (this.destroyed) return
      this.push(null)
      this.#finalCb?.()
    })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#input = { chunk, offset: 0, cb }
    this.#feed()
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#finalCb = cb
    this.#decoder.end()
  }

  override _read(): void {
    this.#wantsData = true
    this.#feed()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#input = undefined
    this.#release()
    this.#decoder.destroy()
    cb(err)
  }

  /** Hands liblzma the next slice of the current chunk, or completes the chunk. */
  #feed(): void {
    const input = this.#input
    if (input === undefined || this.#feeding || !this.#wantsData || this.destroyed) return
    if (input.offset >= input.chunk.length) {
      this.#input = undefined
      input.cb()
      return
    }
    const slice = input.chunk.subarray(input.offset, input.offset + XZ_SLICE_BYTES)
    input.offset += slice.length
    this.#feeding = true
    this.#decoder.write(slice, () => {
      this.#feeding = false
      this.#feed()
    })
  }

  #release(): void {
    if (this.#released) return
    this.#released = true
    // Safe while a thread-pool job runs: lzma-native serialises both on the stream's mutex.
    this.#decoder.cleanup()
    this.#onRelease?.()
  }
}

/**
 * An in-process xz decoder holding its share of the allowance, or undefined
 * when it does not fit.
 * @param narSize the decompressed size when known (the narinfo's NarSize).
 */
function acquireXzInProcess(narSize: number | undefined): Duplex | undefined {
  const share = narSize === undefined ? XZ_DICTIONARY_BYTES : Math.max(1, Math.min(narSize, XZ_DICTIONARY_BYTES))
  if (xzInProcess >= XZ_IN_PROCESS_MAX_SMALL || xzInProcessMemory + share > XZ_IN_PROCESS_MEMORY) return undefined
  xzInProcess++
  xzInProcessMemory += share
  return new XzInProcessDecoder(() => {
    xzInProcess--
    xzInProcessMemory -= share
  })
}

/**
 * A stream that decompresses `compression` (a narinfo `Compression:` value).
 * Corrupt input errors it (child-process decoders and xz with NAR_INVALID;
 * the other library decoders with their own errors, which classifyNarError
 * reads as NAR_INVALID); a decoder command that cannot be started errors it
 * with COMPRESSION_UNSUPPORTED. The caller consumes or destroys the stream: an in-process xz
 * decoder holds its slot until its output ends, it errors or it is destroyed.
 * @param compressedSize the input's size when known (the narinfo's FileSize): picks the decoder.
 * @param narSize the decompressed size when known (the narinfo's NarSize): a small one lets more
 *   xz files decode in-process at once.
 * @throws NarthexError COMPRESSION_UNSUPPORTED for methods this machine cannot decode.
 */
export function createDecompressor(compression: string, compressedSize?: number, narSize?: number): Duplex {
  const small = compressedSize !== undefined && compressedSize <= IN_PROCESS_MAX_BYTES
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 })
    case 'xz': {
      if (!hasCommand('xz')) return new XzInProcessDecoder()
      const inProcess =
        compressedSize !== undefined && compressedSize <= XZ_IN_PROCESS_MAX_BYTES ? acquireXzInProcess(narSize) : undefined
      return inProcess ?? spawnFilter('xz', ['-dc', '-T1'], 'xz')
    }
    case 'zstd':
      if (!small && hasCommand('zstd')) return spawnFilter('zstd', ['-dc', '-q'], 'zstd')
      return new (require('zstd-napi') as { DecompressStream: new () => Duplex }).DecompressStream()
    case 'br':
      return createBrotliDecompress({ chunkSize: 128 * 1024 })
    case 'gzip':
      return createGunzip()
    case 'bzip2':
    case 'lzip':
    case 'lz4': {
      if (hasCommand(compression)) return spawnFilter(compression, ['-dc'], compression)
      break
    }
  }
  throw new NarthexError('COMPRESSION_UNSUPPORTED', `cannot decompress ${JSON.stringify(compression)} NARs on this machine`)
}
