import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import {
  fingerprintNarInfo,
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parseNarInfo,
  parsePublicKey,
  parseSecretKey,
  signNarInfo,
  toPublicKey,
  validSigners,
} from '../../src/protocol/index.js'

const NIXOS_KEY = parsePublicKey('cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=')
const TEST1_SECRET = 'test1:jbX9NxZp8WB/coK8k7yLf0gNYmBbIbCrOFwgJgI7OV+0sASf4R5oFQlioSlN3bJ56uvshzr7S9Z75pcv+9hSkQ=='
const TEST1_PUBLIC = 'test1:tLAEn+EeaBUJYqEpTd2yeerr7Ic6+0vWe+aXL/vYUpE='
const fixture = (name: string) =>
  parseNarInfo(readFileSync(new URL(`../fixtures/real-narinfo/${name}`, import.meta.url), 'utf8'))

test('fingerprint of the curl narinfo is the one Nix signs', () => {
  assert.equal(
    fingerprintNarInfo(fixture('curl-bin.narinfo')),
    '1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;' +
      '/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0,/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115,' +
      '/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12,/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n',
  )
})

test('cache.nixos.org signatures on real narinfos verify; foreign signatures are ignored', () => {
  const test1 = parsePublicKey(TEST1_PUBLIC)
  assert.deepEqual(validSigners(fixture('curl-bin.narinfo'), [NIXOS_KEY, test1]), ['cache.nixos.org-1', 'test1'])
  assert.deepEqual(validSigners(fixture('curl-bin.narinfo'), [NIXOS_KEY]), ['cache.nixos.org-1'])
  // net-tools also carries hydra.other.net-1, a key nobody trusts here.
  assert.deepEqual(validSigners(fixture('net-tools.narinfo'), [NIXOS_KEY, test1]), ['cache.nixos.org-1'])
})

test('a signature stops verifying when any signed field changes', () => {
  const info = fixture('curl-bin.narinfo')
  const changed = [
    { ...info, narSize: info.narSize + 1 },
    { ...info, references: info.references.slice(1) },
    { ...info, narHash: { ...info.narHash, digest: Buffer.alloc(32) } },
    { ...info, storePath: { ...info.storePath, name: 'curl-7.82.0-bio' } },
  ]
  for (const c of changed) assert.deepEqual(validSigners(c, [NIXOS_KEY]), [])
  // Unsigned fields may change freely: URL, compression, file hash and size, deriver.
  assert.deepEqual(validSigners({ ...info, url: 'nar/x.nar', compression: 'none', fileSize: 1 }, [NIXOS_KEY]), [
    'cache.nixos.org-1',
  ])
})

test('the go-nix test1 key pair parses; the public half matches', () => {
  const secret = parseSecretKey(TEST1_SECRET)
  assert.equal(formatPublicKey(toPublicKey(secret)), TEST1_PUBLIC)
  assert.equal(formatSecretKey(secret), TEST1_SECRET)
  // Signing is deterministic (ed25519): the test1 signature of the fixture is reproduced.
  const info = fixture('curl-bin.narinfo')
  const resigned = signNarInfo({ ...info, sigs: [] }, secret)
  assert.ok(info.sigs.includes(resigned.sigs[0]))
})

test('generated keys sign narinfos that verify, and only under their own name', () => {
  const key = generateSecretKey('narthex-test-1')
  const info = signNarInfo(fixture('net-tools.narinfo'), key)
  assert.deepEqual(validSigners(info, [toPublicKey(key)]), ['narthex-test-1'])
  assert.deepEqual(validSigners(info, [{ name: 'other', key: toPublicKey(key).key }]), [])
  assert.equal(parseSecretKey(formatSecretKey(key)).name, 'narthex-test-1')
})

test('malformed keys are rejected with KEY_INVALID', () => {
  const rows = [
    'nocolon',
    ':AAAA',
    'name:not base64!',
    'name:' + Buffer.alloc(31).toString('base64'),
    'bad name:' + Buffer.alloc(32).toString('base64'),
  ]
  for (const row of rows) assert.throws(() => parsePublicKey(row), { code: 'KEY_INVALID' }, row)
  // A secret key whose public half belongs to another seed.
  const a = generateSecretKey('a')
  const b = generateSecretKey('a')
  const mixed = `a:${Buffer.concat([a.seed, b.publicKey]).toString('base64')}`
  assert.throws(() => parseSecretKey(mixed), { code: 'KEY_INVALID' })
})
