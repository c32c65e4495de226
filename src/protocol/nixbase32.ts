/**
 * Nix's base-32 ("nix32"): the alphabet omits e, o, u and t, and the bytes are
 * read from the END of the buffer (src/libutil/base-nix-32.cc). Used for store
 * path hash parts and `sha256:` hashes in narinfo files.
 */
import { NarthexError } from '../errors.js'

/** The 32 characters of nix32, in digit order. Defined here and nowhere else. */
export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'

/** A regular-expression character class matching one nix32 character, for building route and file-name patterns. */
export const NIX32_CHAR_CLASS = `[${NIX32_ALPHABET}]`

const DIGIT_OF: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1)
  for (let i = 0; i < NIX32_ALPHABET.length; i++) table[NIX32_ALPHABET.charCodeAt(i)] = i
  return table
})()

/** Length in characters of the nix32 form of `byteLength` bytes: ⌈8n/5⌉. */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5)
}

/** Byte length encoded by a nix32 string of `charLength` characters, or -1 if no length fits. */
export function nix32DecodedLength(charLength: number): number {
  const bytes = Math.floor((charLength * 5) / 8)
  return nix32Length(bytes) === charLength ? bytes : -1
}

/** Encodes bytes as nix32 (the encoder of base-nix-32.cc, character for character). */
export function encodeNix32(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length)
  let out = ''
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5
    const i = b >> 3
    const j = b & 7
    const c = (bytes[i]! >> j) | (i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0)
    out += NIX32_ALPHABET[c & 31]
  }
  return out
}

/** True when `s` is made only of nix32 characters (says nothing of its length). */
export function isNix32(s: string): boolean {
  for (let k = 0; k < s.length; k++) {
    const code = s.charCodeAt(k)
    if (code >= 128 || DIGIT_OF[code]! < 0) return false
  }
  return true
}

/**
 * Decodes a nix32 string.
 * @throws NarthexError NIX32_INVALID on a character outside the alphabet, a
 *   length no byte count encodes, or set bits beyond the last byte (Nix rejects
 *   those too, so every byte string has exactly one encoding).
 */
export function decodeNix32(s: string): Buffer {
  const byteLength = nix32DecodedLength(s.length)
  if (byteLength < 0) {
    throw new NarthexError('NIX32_INVALID', `invalid nix32 length ${s.length}`)
  }
  const out = Buffer.alloc(byteLength)
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - n - 1)
    const digit = code < 128 ? DIGIT_OF[code]! : -1
    if (digit < 0) {
      throw new NarthexError('NIX32_INVALID', `invalid nix32 character ${JSON.stringify(s[s.length - n - 1])}`)
    }
    const b = n * 5
    const i = b >> 3
    const j = b & 7
    out[i] = out[i]! | ((digit << j) & 0xff)
    const carry = digit >> (8 - j)
    if (i + 1 < byteLength) {
      out[i + 1] = out[i + 1]! | carry
    } else if (carry !== 0) {
      throw new NarthexError('NIX32_INVALID', `nix32 string ${JSON.stringify(s)} has bits beyond its length`)
    }
  }
  return out
}
