/**
 * Verifies a complete NAR file on disk (a push's upload, a stored file):
 * FileHash/FileSize of the bytes, then NarHash/NarSize and the NAR grammar of
 * what they decompress to, by the same check that follows downloads
 * (store/nar-check.ts).
 */
import { nixHashEquals, type Measured, type NixHash } from '../protocol/index.js'
import { checkNarFile } from '../store/index.js'

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
export function verifyNarFile(path: string, expected: NarFileExpectation): Promise<{ file: Measured; nar: Measured }> {
  // An uncompressed file whose FileHash is its NarHash is the NAR: hashed once.
  const single = expected.compression === 'none' && (!expected.fileHash || nixHashEquals(expected.fileHash, expected.narHash))
  return checkNarFile({
    path,
    compression: expected.compression,
    fileHash: expected.fileHash,
    fileSize: expected.fileSize,
    narHash: expected.narHash,
    narSize: expected.narSize,
    single,
  })
}
