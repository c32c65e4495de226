import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  formatStorePath,
  parseStorePath,
  parseStorePathBase,
  parseStorePathLoose,
} from '../../src/protocol/index.js'

const HASH = 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr'

test('valid store paths parse into hash and name', () => {
  const p = parseStorePath(`/nix/store/${HASH}-curl-7.82.0-bin`)
  assert.deepEqual(p, { hashPart: HASH, name: 'curl-7.82.0-bin' })
  assert.equal(formatStorePath(p), `/nix/store/${HASH}-curl-7.82.0-bin`)
  for (const name of ['a', 'x+y=z?_', '.a', '..a', '-', 'n'.repeat(211)]) {
    assert.equal(parseStorePathBase(`${HASH}-${name}`).name, name)
  }
})

test('invalid store paths are rejected with STORE_PATH_INVALID', () => {
  const rows: Array<[string, string]> = [
    [`/nix/stor/${HASH}-x`, 'wrong store dir'],
    [`/nix/store/${HASH}`, 'no name'],
    [`/nix/store/${HASH}-`, 'empty name'],
    [`/nix/store/${HASH}_x`, 'no dash'],
    [`/nix/store/${HASH.slice(1)}-x`, 'short hash'],
    [`/nix/store/${HASH.replace('s', 'e')}-x`, 'e is not nix32'],
    [`/nix/store/${HASH}-a/b`, 'slash in name'],
    [`/nix/store/${HASH}-.`, 'name "."'],
    [`/nix/store/${HASH}-..`, 'name ".."'],
    [`/nix/store/${HASH}-.-x`, 'starts with .-'],
    [`/nix/store/${HASH}-..-x`, 'starts with ..-'],
    [`/nix/store/${HASH}-${'n'.repeat(212)}`, 'name too long'],
    [`/nix/store/${HASH}-a b`, 'space'],
    [`/nix/store/${HASH}-a\0`, 'NUL'],
  ]
  for (const [path, why] of rows) assert.throws(() => parseStorePath(path), { code: 'STORE_PATH_INVALID' }, why)
})

test('loose parsing accepts a full path with a subpath, a basename or a hash part', () => {
  assert.deepEqual(parseStorePathLoose(`/nix/store/${HASH}-curl/bin/curl`), { hashPart: HASH, name: 'curl' })
  assert.deepEqual(parseStorePathLoose(`${HASH}-curl`), { hashPart: HASH, name: 'curl' })
  assert.deepEqual(parseStorePathLoose(HASH), { hashPart: HASH, name: '' })
  assert.throws(() => parseStorePathLoose('curl'), { code: 'STORE_PATH_INVALID' })
})
