/**
 * Verifies a complete NAR file on disk in one pass: FileHash/FileSize of the
 * bytes, then NarHash/NarSize and the NAR grammar of what they decompress to.
 */
import { createReadStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { NarthexError, isNarthexError } from '../errors.js'
import { HashingPassThrough, NarSink, type Measured, type NixHash } from '../protocol/index.js'
import { createDecompressor } from '../store/index.js'

/** What a NAR file must be. FileHash and FileSize may be unknown. */
export interface NarFileExpectation {
  readonly compression: string
  readonly fileHash?: NixHash | undefined
  readonly fileSize?: number | undefined
  readonly narHash: NixHash
  readonly narSize: number
}

/**
 * Reads `path` and checks it against `expected`.
 * @returns the measured file and NAR hashes and sizes.
 * @throws NarthexError HASH_MISMATCH, SIZE_MISMATCH, NAR_INVALID (corrupt
 *   compression included), COMPRESSION_UNSUPPORTED, or STORE_IO when unreadable.
 */
export async function verifyNarFile(path: string, expected: NarFileExpectation): Promise<{ file: Measured; nar: Measured }> {
  const file = new HashingPassThrough(
    { ...(expected.fileHash ? { hash: expected.fileHash } : {}), ...(expected.fileSize !== undefined ? { size: expected.fileSize } : {}) },
    'NAR file',
  )
  const nar = new NarSink({ hash: expected.narHash, size: expected.narSize })
  try {
    await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), file, createDecompressor(expected.compression, expected.fileSize), nar)
  } catch (err) {
    if (isNarthexError(err)) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EIO') {
      throw new NarthexError('STORE_IO', `cannot read ${path}: ${code}`, { cause: err })
    }
    // Decoder libraries fail with their own errors on corrupt input.
    throw new NarthexError('NAR_INVALID', `corrupt compressed data: ${(err as Error).message}`, { cause: err })
  }
  return { file: file.result!, nar: nar.result! }
}
