import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { formatNixHash, formatSriHash, parseNixHash } from '../../src/protocol/index.js'

const digest = createHash('sha256').update('abc').digest()
const NIX32 = 'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'

test('every encoding Nix accepts normalises to sha256:<nix32>', () => {
  const inputs = [
    NIX32,
    `sha256:${digest.toString('hex')}`,
    `sha256:${digest.toString('hex').toUpperCase()}`,
    `sha256:${digest.toString('base64')}`,
    `sha256-${digest.toString('base64')}`,
  ]
  for (const input of inputs) {
    const hash = parseNixHash(input)
    assert.equal(hash.algorithm, 'sha256', input)
    assert.equal(formatNixHash(hash), NIX32, input)
  }
  assert.equal(formatSriHash(parseNixHash(NIX32)), `sha256-${digest.toString('base64')}`)
})

test('other algorithms keep their own sizes', () => {
  const sha512 = createHash('sha512').update('abc').digest()
  assert.equal(parseNixHash(`sha512-${sha512.toString('base64')}`).digest.length, 64)
  assert.equal(parseNixHash(`sha1:${createHash('sha1').update('').digest('hex')}`).algorithm, 'sha1')
})

test('malformed hashes are rejected with HASH_INVALID', () => {
  const bad = [
    '',
    'sha256',
    '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
    'sha257:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
    'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5',
    'sha256:eb8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
    `sha256:${digest.toString('hex').slice(1)}`,
    `sha256-${digest.toString('hex')}`,
    `sha256:${digest.toString('base64').replace('=', '')}`,
    'md5:zzzzzzzzzzzzzzzzzzzzzzzzzz',
  ]
  for (const input of bad) assert.throws(() => parseNixHash(input), { code: 'HASH_INVALID' }, input)
})
