/**
 * Decompression of NAR files as streams, for every compression upstreams use.
 * The choice per format was measured (bench/decompress/README.md): xz, large
 * zstd and bzip2 files go through the system's `xz`, `zstd` and `bzip2` in a
 * child process (the reference decoders, on the other core, never stalling the
 * event loop); small zstd files through zstd-napi in-process (no process
 * start-up); brotli and gzip through node:zlib's thread pool. Without the
 * commands, the bindings (lzma-native, zstd-napi) decode everything.
 */
import { spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { Duplex, PassThrough } from 'node:stream'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import { NarthexError } from '../errors.js'

const require = createRequire(import.meta.url)

const commandCache = new Map<string, boolean>()

/** True when `cmd` can be run (checked once per process). */
function hasCommand(cmd: string): boolean {
  let ok = commandCache.get(cmd)
  if (ok === undefined) {
    ok = spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0
    commandCache.set(cmd, ok)
  }
  return ok
}

/**
 * A Duplex around a child process filter (`xz -dc`): bytes written go to its
 * stdin, its stdout is readable. A non-zero exit (corrupt input) errors the
 * stream with NAR_INVALID and the decoder's message.
 */
function spawnFilter(cmd: string, args: string[], what: string): Duplex {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d
  })
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout })
  // An early exit closes stdin under a pending write: that EPIPE is not the real error.
  child.stdin.on('error', () => undefined)
  child.on('close', (code, signal) => {
    if (code !== 0 && !duplex.destroyed) {
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
 * A stream that decompresses `compression` (a narinfo `Compression:` value).
 * Corrupt input errors it (child-process decoders with NAR_INVALID; library
 * decoders with their own errors, which callers report as NAR_INVALID).
 * @param compressedSize the input's size when known (the narinfo's FileSize): picks the decoder.
 * @throws NarthexError COMPRESSION_UNSUPPORTED for methods this machine cannot decode.
 */
export function createDecompressor(compression: string, compressedSize?: number): Duplex {
  const small = compressedSize !== undefined && compressedSize <= IN_PROCESS_MAX_BYTES
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 })
    case 'xz':
      // Always a child process when `xz` exists: liblzma allocates the whole dictionary (8 MiB
      // at Nix's default preset) per decoder, which in-process would count against narthex's
      // memory for every concurrent download, however small the NAR.
      if (hasCommand('xz')) return spawnFilter('xz', ['-dc', '-T1'], 'xz')
      return (require('lzma-native') as { createDecompressor(): Duplex }).createDecompressor()
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
