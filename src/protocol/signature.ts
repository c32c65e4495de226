/**
 * Narinfo fingerprints and ed25519 signatures in Nix's formats
 * (src/libstore/path-info.cc, src/libutil/signature/local-keys.cc).
 *
 * Keys use libsodium's layout, as `nix key generate-secret` writes them: a secret
 * key is `name:base64(seed32 ‖ pub32)`, a public key `name:base64(pub32)`, and a
 * signature `name:base64(sig64)`. A signature covers only StorePath, NarHash,
 * NarSize and References.
 *
 * Two ed25519 implementations, each where it fits:
 * - signing (narthex's own narinfos) and verifying (upstream signatures) go
 *   through node:crypto: OpenSSL's ed25519, native and constant-time. A
 *   signature costs about 0.03-0.1 ms there when the machine is quiet, against
 *   0.4 ms for @noble/ed25519; on the 2-core build machine under a load average
 *   of 8-10, 2,000 signatures of a narinfo fingerprint took 0.09-0.40 ms each
 *   with node:crypto and 1.55-2.03 ms with noble (four to twenty times more).
 *   Every path of a cold closure is signed once at admission, so it is on the
 *   client's path. Raw 32-byte keys are wrapped in their RFC 8410 DER
 *   envelopes (PKCS#8 for the seed, SubjectPublicKeyInfo for a public key) to
 *   make KeyObjects, cached per key.
 * - a seed's public half (checked against the key file's at every start) comes
 *   from node:crypto too.
 * - @noble/ed25519 (audited, pure JavaScript) only makes new keys: once per key,
 *   off every request's path.
 * test/protocol/signature-crypto.test.ts checks each against the other.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { NarthexError } from '../errors.js'
import { formatNixHash } from './hash.js'
import type { NarInfo } from './narinfo.js'
import { formatStorePath, STORE_DIR } from './store-path.js'

// noble's synchronous API needs a SHA-512; node:crypto's is native.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

// RFC 8410 DER prefix: SubjectPublicKeyInfo around a 32-byte ed25519 public key.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
// RFC 8410 DER prefix: PKCS#8 OneAsymmetricKey around a 32-byte ed25519 seed.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

/** A cached KeyObject, with a copy of the bytes it was made from (undefined: they are no usable key). */
interface CachedKeyObject {
  readonly bytes: Buffer
  readonly keyObject: KeyObject | undefined
}

// Keyed by the Uint8Array itself (a PublicKey's key), so an entry lives exactly
// as long as the key it belongs to. The bytes are compared on every hit: a
// caller that mutates a key's bytes gets a new KeyObject, never a stale one (a
// stale public key would verify under the wrong key).
const publicKeyObjects = new WeakMap<Uint8Array, CachedKeyObject>()
// The same for seeds (a SecretKey's seed): the private KeyObject signing uses.
const privateKeyObjects = new WeakMap<Uint8Array, CachedKeyObject>()

/** The private KeyObject of a 32-byte seed, cached like public ones. */
function privateKeyObject(seed: Uint8Array): KeyObject {
  const hit = privateKeyObjects.get(seed)
  if (hit?.keyObject && hit.bytes.equals(seed)) return hit.keyObject
  const bytes = Buffer.from(checkedSeed(seed))
  const keyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, bytes]), format: 'der', type: 'pkcs8' })
  privateKeyObjects.set(seed, { bytes, keyObject })
  return keyObject
}

/** The seed itself; throws KEY_INVALID when it is not 32 bytes (noble would throw a RangeError). */
function checkedSeed(seed: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw new NarthexError('KEY_INVALID', `an ed25519 seed is 32 bytes, not ${seed.length}`)
  return seed
}

/** The public KeyObject of 32 key bytes, or undefined when node:crypto refuses them (such a key verifies nothing). */
function publicKeyObject(key: Uint8Array): KeyObject | undefined {
  const hit = publicKeyObjects.get(key)
  if (hit && hit.bytes.equals(key)) return hit.keyObject
  const bytes = Buffer.from(key)
  let keyObject: KeyObject | undefined
  try {
    keyObject =
      bytes.length === 32
        ? createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, bytes]), format: 'der', type: 'spki' })
        : undefined
  } catch {
    keyObject = undefined
  }
  publicKeyObjects.set(key, { bytes, keyObject })
  return keyObject
}

/**
 * The 32-byte public key of a 32-byte seed, through node:crypto: noble's first
 * derivation builds its table of base-point multiples, about 30 ms of every start.
 */
function derivePublicKey(seed: Uint8Array): Uint8Array {
  const spki = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' })
  return new Uint8Array(spki.subarray(SPKI_ED25519_PREFIX.length))
}

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

const KEY_NAME = /^[A-Za-z0-9._+-]+$/

/** True when `name` is a valid key name (the part of a key or `Sig:` value before the colon). */
export function isKeyName(name: string): boolean {
  return KEY_NAME.test(name)
}

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
  if (!Buffer.from(derivePublicKey(seed)).equals(publicKey)) {
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
  const { secretKey, publicKey } = ed.keygen()
  return { name, seed: secretKey, publicKey }
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

/**
 * Signs a fingerprint, returning the `Sig:` value `name:base64` (ed25519 is
 * deterministic: the same key and fingerprint always give the same signature).
 * @throws NarthexError KEY_INVALID when the key's seed is not 32 bytes.
 */
export function signFingerprint(fingerprint: string, key: SecretKey): string {
  const sig = sign(null, Buffer.from(fingerprint, 'utf8'), privateKeyObject(key.seed))
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
  const keyObject = publicKeyObject(key)
  if (keyObject === undefined || sig.length !== 64) return false
  try {
    return verify(null, message, keyObject, sig)
  } catch {
    // OpenSSL answers false for a key that is not a curve point; should a
    // version throw on such a key or signature instead, it is still just invalid.
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

/**
 * The key name of a `Sig:` value, or of a key in Nix's `name:base64` form: the
 * part before the first colon (empty when there is none).
 */
export function signatureKeyName(sig: string): string {
  return sig.slice(0, Math.max(0, sig.indexOf(':')))
}

/** The names of the keys among `keys` that validly signed this narinfo, sorted and distinct. */
export function validSigners(info: NarInfo, keys: readonly PublicKey[]): string[] {
  return [...new Set(validSignatures(info, keys).map(signatureKeyName))].sort()
}

/** Signatures made before, by fingerprint, for one key (an LRU, say): see {@link signNarInfo}. */
export interface SignatureMemo {
  get(fingerprint: string): string | undefined
  set(fingerprint: string, sig: string): unknown
}

/**
 * The narinfo with `key`'s signature added (replacing an earlier one by the same key name).
 * A signature covers only the fingerprint, not URL, Compression, FileHash or FileSize, so with
 * `memo` (which must only ever see this key) a path is signed once however its NAR file changes.
 */
export function signNarInfo<T extends NarInfo>(info: T, key: SecretKey, memo?: SignatureMemo): T {
  const fingerprint = fingerprintNarInfo(info)
  let sig = memo?.get(fingerprint)
  if (sig === undefined) {
    sig = signFingerprint(fingerprint, key)
    memo?.set(fingerprint, sig)
  }
  const others = info.sigs.filter((s) => !s.startsWith(`${key.name}:`))
  return { ...info, sigs: [...others, sig].sort() }
}
