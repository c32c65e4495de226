/**
 * Narinfo fingerprints and ed25519 signatures in Nix's formats
 * (src/libstore/path-info.cc, src/libutil/signature/local-keys.cc).
 *
 * Keys use libsodium's layout, as `nix key generate-secret` writes them: a secret
 * key is `name:base64(seed32 ‖ pub32)`, a public key `name:base64(pub32)`, and a
 * signature `name:base64(sig64)`. A signature covers only StorePath, NarHash,
 * NarSize and References.
 */
import { createHash, randomBytes } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { NarthexError } from '../errors.js'
import { formatNixHash } from './hash.js'
import type { NarInfo } from './narinfo.js'
import { formatStorePath, STORE_DIR } from './store-path.js'

// noble's synchronous API needs a sha512; node:crypto's is the fastest at hand.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

/** A public key: the name clients look it up by, and its 32 bytes. */
export interface PublicKey {
  readonly name: string
  readonly key: Uint8Array
}

/** A secret key: its name, the 32-byte seed and the matching public key. */
export interface SecretKey {
  readonly name: string
  readonly seed: Uint8Array
  readonly publicKey: Uint8Array
}

/** A detached signature as carried by a `Sig:` line. */
export interface Signature {
  readonly keyName: string
  readonly sig: Uint8Array
}

const KEY_NAME = /^[A-Za-z0-9._+\-]+$/

function splitNamed(text: string, what: string, bytes: number): { name: string; value: Buffer } {
  const colon = text.indexOf(':')
  if (colon <= 0) throw new NarthexError('KEY_INVALID', `${what} ${JSON.stringify(text)} is not name:base64`)
  const name = text.slice(0, colon)
  if (!KEY_NAME.test(name)) throw new NarthexError('KEY_INVALID', `${what} has an invalid name ${JSON.stringify(name)}`)
  const b64 = text.slice(colon + 1).trim()
  const value = Buffer.from(b64, 'base64')
  if (value.length !== bytes || value.toString('base64') !== b64) {
    throw new NarthexError('KEY_INVALID', `${what} ${JSON.stringify(name)} is not ${bytes} bytes of base64`)
  }
  return { name, value }
}

/**
 * Parses a public key `name:base64(32 bytes)`.
 * @throws NarthexError KEY_INVALID
 */
export function parsePublicKey(text: string): PublicKey {
  const { name, value } = splitNamed(text.trim(), 'public key', 32)
  return { name, key: new Uint8Array(value) }
}

/** Formats a public key as Nix writes it. */
export function formatPublicKey(key: PublicKey): string {
  return `${key.name}:${Buffer.from(key.key).toString('base64')}`
}

/**
 * Parses a secret key `name:base64(seed ‖ public)` and checks that the public half
 * belongs to the seed.
 * @throws NarthexError KEY_INVALID
 */
export function parseSecretKey(text: string): SecretKey {
  const { name, value } = splitNamed(text.trim(), 'secret key', 64)
  const seed = new Uint8Array(value.subarray(0, 32))
  const publicKey = new Uint8Array(value.subarray(32))
  if (!Buffer.from(ed.getPublicKey(seed)).equals(publicKey)) {
    throw new NarthexError('KEY_INVALID', `secret key ${JSON.stringify(name)}: its public half does not match its seed`)
  }
  return { name, seed, publicKey }
}

/** Formats a secret key as `nix key generate-secret` writes it. */
export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${Buffer.concat([key.seed, key.publicKey]).toString('base64')}`
}

/** The public half of a secret key. */
export function toPublicKey(key: SecretKey): PublicKey {
  return { name: key.name, key: key.publicKey }
}

/**
 * Makes a new secret key from the system's CSPRNG.
 * @throws NarthexError KEY_INVALID when the name is not a valid key name.
 */
export function generateSecretKey(name: string): SecretKey {
  if (!KEY_NAME.test(name)) throw new NarthexError('KEY_INVALID', `invalid key name ${JSON.stringify(name)}`)
  const seed = new Uint8Array(randomBytes(32))
  return { name, seed, publicKey: ed.getPublicKey(seed) }
}

/**
 * Parses a `Sig:` value `name:base64(64 bytes)`.
 * @throws NarthexError SIGNATURE_INVALID
 */
export function parseSignature(text: string): Signature {
  try {
    const { name, value } = splitNamed(text, 'signature', 64)
    return { keyName: name, sig: new Uint8Array(value) }
  } catch (err) {
    throw new NarthexError('SIGNATURE_INVALID', `malformed signature ${JSON.stringify(text.slice(0, 120))}`, {
      cause: err,
    })
  }
}

/**
 * The string a narinfo signature signs:
 * `1;<StorePath>;sha256:<nix32 NarHash>;<NarSize>;<sorted full reference paths, comma-joined>`.
 * @throws NarthexError HASH_INVALID when the NarHash is not sha256 (Nix refuses those too).
 */
export function fingerprintNarInfo(info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>): string {
  if (info.narHash.algorithm !== 'sha256') {
    throw new NarthexError('HASH_INVALID', `NarHash of ${formatStorePath(info.storePath)} is not sha256`)
  }
  const refs = [...info.references]
    .sort()
    .map((r) => `${STORE_DIR}/${r}`)
    .join(',')
  return `1;${formatStorePath(info.storePath)};${formatNixHash(info.narHash)};${info.narSize};${refs}`
}

/** Signs a fingerprint, returning the `Sig:` value `name:base64`. */
export function signFingerprint(fingerprint: string, key: SecretKey): string {
  const sig = ed.sign(Buffer.from(fingerprint, 'utf8'), key.seed)
  return `${key.name}:${Buffer.from(sig).toString('base64')}`
}

/**
 * Checks one signature over a fingerprint against the key of the same name.
 * Malformed signatures and signatures by unknown names are simply not valid.
 */
export function verifyFingerprint(fingerprint: string, sigText: string, keys: readonly PublicKey[]): boolean {
  let sig: Signature
  try {
    sig = parseSignature(sigText)
  } catch {
    return false
  }
  const message = Buffer.from(fingerprint, 'utf8')
  return keys.some((k) => k.name === sig.keyName && verifyBytes(sig.sig, message, k.key))
}

function verifyBytes(sig: Uint8Array, message: Uint8Array, key: Uint8Array): boolean {
  try {
    return ed.verify(sig, message, key)
  } catch {
    // noble throws on points that do not decode; such a signature is just invalid.
    return false
  }
}

/**
 * The `Sig:` values of this narinfo that verify under `keys` (looked up by name).
 * Signatures by other names, or that do not verify, are left out, as Nix ignores them.
 */
export function validSignatures(info: NarInfo, keys: readonly PublicKey[]): string[] {
  const fingerprint = fingerprintNarInfo(info)
  return info.sigs.filter((sig) => verifyFingerprint(fingerprint, sig, keys))
}

/** The key name of a `Sig:` value (the part before the colon). */
export function signatureKeyName(sig: string): string {
  return sig.slice(0, Math.max(0, sig.indexOf(':')))
}

/** The names of the keys among `keys` that validly signed this narinfo, sorted and distinct. */
export function validSigners(info: NarInfo, keys: readonly PublicKey[]): string[] {
  return [...new Set(validSignatures(info, keys).map(signatureKeyName))].sort()
}

/** The narinfo with `key`'s signature added (replacing an earlier one by the same key name). */
export function signNarInfo<T extends NarInfo>(info: T, key: SecretKey): T {
  const sig = signFingerprint(fingerprintNarInfo(info), key)
  const others = info.sigs.filter((s) => !s.startsWith(`${key.name}:`))
  return { ...info, sigs: [...others, sig].sort() }
}
