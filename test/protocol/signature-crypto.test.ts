/**
 * narthex's ed25519 against an independent implementation: narthex signs and
 * verifies with node:crypto (OpenSSL), so its signatures are checked against
 * @noble/ed25519's (signed and verified there) and noble's signatures must
 * verify in narthex; its keys come from noble, so their public halves are
 * checked against OpenSSL's. Plus the inputs that must make verification
 * answer false rather than throw.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import * as ed from '@noble/ed25519'
import fc from 'fast-check'
import {
  formatSecretKey,
  generateSecretKey,
  parseSecretKey,
  parseSignature,
  signFingerprint,
  toPublicKey,
  verifyFingerprint,
  type PublicKey,
  type SecretKey,
} from '../../src/protocol/index.js'

// noble's synchronous API needs a sha512 supplied.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

/** OpenSSL's private key object for a 32-byte seed (RFC 8410 PKCS#8 envelope). */
function opensslKey(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' })
}

/** The public key OpenSSL derives from a seed. */
function opensslPublicKey(seed: Uint8Array): Uint8Array {
  return new Uint8Array(Buffer.from(createPublicKey(opensslKey(seed)).export({ format: 'jwk' }).x!, 'base64url'))
}

const utf8 = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'))
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const rawSig = (sigText: string) => parseSignature(sigText).sig

/** A secret key whose public half is OpenSSL's: parseSecretKey only accepts it if narthex derives the same. */
function keyFromSeed(seed: Uint8Array, name = 'k'): SecretKey {
  return parseSecretKey(`${name}:${b64(Buffer.concat([seed, opensslPublicKey(seed)]))}`)
}

/** A 32-byte little-endian encoding of y (the sign bit of x left clear). */
function encodeY(y: bigint): Uint8Array {
  const out = new Uint8Array(32)
  for (let i = 0; i < 32; i++) out[i] = Number((y >> BigInt(8 * i)) & 0xffn)
  return out
}

const P = 2n ** 255n - 19n
// The order of the ed25519 base point; a signature's s must be below it.
const L = 2n ** 252n + 27742317777372353535851937790883648493n

test('RFC 8032 §7.1 TEST 1: public key and signature of the empty message', () => {
  const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex')
  const key = keyFromSeed(seed, 'rfc8032-1')
  assert.equal(Buffer.from(key.publicKey).toString('hex'), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
  const sig = signFingerprint('', key)
  assert.equal(
    Buffer.from(rawSig(sig)).toString('hex'),
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  )
  assert.equal(verifyFingerprint('', sig, [toPublicKey(key)]), true)
})

test('for random seeds and messages, signatures equal noble\'s and verify under both implementations; tampering breaks both', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.string({ unit: 'binary', maxLength: 400 }),
      fc.nat(64 * 8 - 1),
      (seed, message, bit) => {
        const key = keyFromSeed(seed)
        const pub = toPublicKey(key)
        const sigText = signFingerprint(message, key)
        assert.ok(sigText.startsWith('k:'))
        const sig = rawSig(sigText)
        // Deterministic ed25519: an independent implementation gives the same bytes.
        const nobleSig = ed.sign(utf8(message), seed)
        assert.deepEqual(Buffer.from(sig), Buffer.from(nobleSig))
        assert.equal(verifyFingerprint(message, sigText, [pub]), true)
        assert.equal(ed.verify(sig, utf8(message), pub.key), true)
        // noble's signature (not narthex's) verifies in narthex.
        assert.equal(verifyFingerprint(message, `k:${b64(nobleSig)}`, [pub]), true)

        const flipped = new Uint8Array(sig)
        flipped[bit >> 3] ^= 1 << (bit & 7)
        assert.equal(verifyFingerprint(message, `k:${b64(flipped)}`, [pub]), false)
        assert.equal(ed.verify(flipped, utf8(message), pub.key), false)
        assert.equal(verifyFingerprint(`${message}.`, sigText, [pub]), false)
      },
    ),
    { numRuns: 300 },
  )
})

test('generated keys have the public half OpenSSL derives from their seed', () => {
  for (let i = 0; i < 20; i++) {
    const key = generateSecretKey('gen-1')
    assert.deepEqual(Buffer.from(key.publicKey), Buffer.from(opensslPublicKey(key.seed)))
    assert.equal(formatSecretKey(parseSecretKey(formatSecretKey(key))), formatSecretKey(key))
  }
})

test('public keys that are not valid curve points make verification false, never an error', () => {
  const key = generateSecretKey('k')
  const fingerprint = '1;/nix/store/00000000000000000000000000000000-x;sha256:0;1;'
  const sigText = signFingerprint(fingerprint, key)
  const rows: Array<[string, Uint8Array]> = [
    ['y = 2 (x² is not a square)', encodeY(2n)],
    ['y = 7', encodeY(7n)],
    ['y = p (non-canonical)', encodeY(P)],
    ['y = 2^255 - 1 (non-canonical)', encodeY(2n ** 255n - 1n)],
    ['x = 0 with the sign bit set', encodeY(1n | (1n << 255n))],
  ]
  for (const [what, bytes] of rows) {
    assert.throws(() => ed.Point.fromBytes(bytes), Error, `noble decodes ${what}`)
    const bad: PublicKey = { name: 'k', key: bytes }
    assert.equal(verifyFingerprint(fingerprint, sigText, [bad]), false, what)
    // Twice: the second answer comes from the cached KeyObject (or its absence).
    assert.equal(verifyFingerprint(fingerprint, sigText, [bad]), false, what)
    // A bad key of the same name does not hide a good one after it.
    assert.equal(verifyFingerprint(fingerprint, sigText, [bad, toPublicKey(key)]), true, what)
  }
  for (const length of [0, 31, 33, 64]) {
    assert.equal(verifyFingerprint(fingerprint, sigText, [{ name: 'k', key: new Uint8Array(length) }]), false, `${length}-byte key`)
  }
})

test('random keys and random signatures verify nothing, without throwing', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), (key, sig) => {
      assert.equal(verifyFingerprint('fingerprint', `k:${b64(sig)}`, [{ name: 'k', key }]), false)
    }),
    { numRuns: 500 },
  )
})

test('malformed signatures are not valid', () => {
  const key = generateSecretKey('k')
  const pub = toPublicKey(key)
  const fingerprint = 'some fingerprint'
  const good = rawSig(signFingerprint(fingerprint, key))
  const sBytes = good.subarray(32)
  let s = 0n
  for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sBytes[i])
  const rows: Array<[string, string]> = [
    ['empty', ''],
    ['no name', b64(good)],
    ['empty base64', 'k:'],
    ['63 bytes', `k:${b64(good.subarray(0, 63))}`],
    ['65 bytes', `k:${b64(Buffer.concat([good, Buffer.from([0])]))}`],
    ['32 bytes', `k:${b64(good.subarray(0, 32))}`],
    ['not base64', `k:${'!'.repeat(86)}==`],
    ['all zeros', `k:${b64(new Uint8Array(64))}`],
    ['all ones', `k:${b64(new Uint8Array(64).fill(0xff))}`],
    // s + L verifies under the cofactorless equation but is not canonical: RFC 8032 rejects it.
    ['s + L (non-canonical s)', `k:${b64(Buffer.concat([good.subarray(0, 32), encodeY(s + L)]))}`],
    ['another key name', `other:${b64(good)}`],
  ]
  for (const [what, sigText] of rows) assert.equal(verifyFingerprint(fingerprint, sigText, [pub]), false, what)
  assert.equal(verifyFingerprint(fingerprint, `k:${b64(good)}`, [pub]), true)
})

test('cached key objects follow the key bytes, not just the key object', () => {
  const a = generateSecretKey('k')
  const b = generateSecretKey('k')
  const fingerprint = 'cache'
  const sigA = signFingerprint(fingerprint, a)
  const sigB = signFingerprint(fingerprint, b)
  const pub = { name: 'k', key: new Uint8Array(a.publicKey) }
  assert.equal(verifyFingerprint(fingerprint, sigA, [pub]), true)
  pub.key.set(b.publicKey)
  assert.equal(verifyFingerprint(fingerprint, sigA, [pub]), false)
  assert.equal(verifyFingerprint(fingerprint, sigB, [pub]), true)

  const signer = { name: 'k', seed: new Uint8Array(a.seed), publicKey: a.publicKey }
  assert.equal(signFingerprint(fingerprint, signer), sigA)
  signer.seed.set(b.seed)
  assert.equal(signFingerprint(fingerprint, signer), sigB)
})
