/**
 * Hashes as Nix writes them: `<algo>:<digest>` with the digest in nix32, base16
 * or base64, or SRI `<algo>-<base64>`. narthex normalises every hash it keeps or
 * serves to `<algo>:<nix32>`, the form Nix itself writes in narinfo files.
 */
import { NarthexError } from '../errors.js'
import { decodeNix32, encodeNix32, nix32Length } from './nixbase32.js'

/** Hash algorithms Nix knows, with their digest sizes in bytes. */
export const HASH_SIZES = { md5: 16, sha1: 20, sha256: 32, sha512: 64 } as const

/** A hash algorithm name. */
export type HashAlgorithm = keyof typeof HASH_SIZES

/** A parsed hash: the algorithm and the raw digest. */
export interface NixHash {
  readonly algorithm: HashAlgorithm
  readonly digest: Buffer
}

const BASE16 = /^[0-9a-fA-F]+$/
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

function isAlgorithm(s: string): s is HashAlgorithm {
  return Object.hasOwn(HASH_SIZES, s)
}

function decodeDigest(algorithm: HashAlgorithm, text: string, sri: boolean): Buffer {
  const size = HASH_SIZES[algorithm]
  const base64Length = Math.ceil(size / 3) * 4
  if (!sri && text.length === size * 2 && BASE16.test(text)) return Buffer.from(text, 'hex')
  if (!sri && text.length === nix32Length(size)) {
    try {
      return decodeNix32(text)
    } catch (err) {
      throw new NarthexError('HASH_INVALID', `invalid nix32 digest in hash ${JSON.stringify(text)}`, { cause: err })
    }
  }
  if (text.length === base64Length && BASE64.test(text)) {
    const digest = Buffer.from(text, 'base64')
    // Node's decoder ignores stray bits; re-encoding catches non-canonical input.
    if (digest.length === size && digest.toString('base64') === text) return digest
  }
  throw new NarthexError('HASH_INVALID', `digest ${JSON.stringify(text)} is not a valid ${algorithm} hash`)
}

/**
 * Parses a hash in any encoding Nix accepts: `sha256:<nix32|base16|base64>` or
 * SRI `sha256-<base64>`.
 * @throws NarthexError HASH_INVALID on an unknown algorithm or a malformed digest.
 */
export function parseNixHash(text: string): NixHash {
  const colon = text.indexOf(':')
  const dash = text.indexOf('-')
  let algorithm: string
  let rest: string
  let sri: boolean
  if (colon > 0 && (dash < 0 || colon < dash)) {
    algorithm = text.slice(0, colon)
    rest = text.slice(colon + 1)
    sri = false
  } else if (dash > 0) {
    algorithm = text.slice(0, dash)
    rest = text.slice(dash + 1)
    sri = true
  } else {
    throw new NarthexError('HASH_INVALID', `hash ${JSON.stringify(text)} names no algorithm`)
  }
  if (!isAlgorithm(algorithm)) {
    throw new NarthexError('HASH_INVALID', `unknown hash algorithm ${JSON.stringify(algorithm)}`)
  }
  return { algorithm, digest: decodeDigest(algorithm, rest, sri) }
}

/** Formats a hash as Nix writes it in narinfo files: `<algo>:<nix32>`. */
export function formatNixHash(hash: NixHash): string {
  return `${hash.algorithm}:${encodeNix32(hash.digest)}`
}

/** Formats a hash in SRI form: `<algo>-<base64>`. */
export function formatSriHash(hash: NixHash): string {
  return `${hash.algorithm}-${hash.digest.toString('base64')}`
}

/** A sha256 {@link NixHash} of a finished digest. */
export function sha256Hash(digest: Buffer): NixHash {
  return { algorithm: 'sha256', digest }
}

/** True when both hashes have the same algorithm and digest. */
export function nixHashEquals(a: NixHash, b: NixHash): boolean {
  return a.algorithm === b.algorithm && a.digest.equals(b.digest)
}
