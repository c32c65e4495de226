/**
 * The configuration of private caches: `access`, the upstreams' credential files, and how the
 * older inline `push.tokens` fit in. A mistake stops narthex at start with a message naming the
 * field and saying what to write instead.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildConfig } from '../../src/config/index.js'
import { NarthexError } from '../../src/errors.js'

const KEY = 'corp-1:' + Buffer.alloc(32, 1).toString('base64')
const up = { name: 'up', url: 'https://cache.example.org' }
const reader = { name: 'laptops', secretFile: 'tokens/laptops', scopes: ['read'] }

function issues(raw: unknown): string {
  try {
    buildConfig(raw, '/srv/narthex')
  } catch (err) {
    assert.ok(err instanceof NarthexError && err.code === 'CONFIG_INVALID')
    return err.message
  }
  return ''
}

test('access defaults to public reading; secret file paths are taken from the working directory', () => {
  assert.deepEqual(buildConfig({}, '/srv').access, { read: 'public', tokens: [] })
  const c = buildConfig({ upstreams: [{ ...up, netrcFile: 'netrc' }], access: { read: 'tokens', tokens: [reader] } }, '/srv/narthex')
  assert.equal(c.upstreams[0].netrcFile, '/srv/narthex/netrc')
  assert.equal(c.access.tokens[0].secretFile, '/srv/narthex/tokens/laptops')
})

test('inline push.tokens keep working with public reading', () => {
  const c = buildConfig({ push: { tokens: ['0123456789abcdef'], publicKeys: [KEY] } }, '/srv')
  assert.deepEqual(c.push!.tokens, ['0123456789abcdef'])
})

test('mistakes are refused at start, naming the field and the fix', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['credentials in the URL', { upstreams: [{ ...up, url: 'https://u:p@cache.example.org' }] }, /upstreams\.0\.url: put credentials in netrcFile or bearerTokenFile/],
    ['both credential files', { upstreams: [{ ...up, netrcFile: 'a', bearerTokenFile: 'b' }] }, /upstreams\.0: give netrcFile or bearerTokenFile, not both/],
    ['an unknown scope', { access: { tokens: [{ ...reader, scopes: ['admin'] }] } }, /access\.tokens\.0\.scopes\.0/],
    ['a duplicate token name', { access: { tokens: [reader, reader] } }, /access\.tokens\.1\.name: duplicate token name/],
    ['pushMatch without push', { access: { tokens: [{ ...reader, pushMatch: ['corp-*'] }] } }, /access\.tokens\.0\.pushMatch: pushMatch needs the push scope/],
    ['push scope without a push section', { access: { tokens: [{ ...reader, scopes: ['push'] }] } }, /access\.tokens\.0\.scopes: the push scope needs a push section/],
    ['a push section no token may use', { push: { publicKeys: [KEY] } }, /push: no token may push/],
    [
      'inline push tokens with private reading',
      { access: { read: 'tokens', tokens: [reader] }, push: { tokens: ['0123456789abcdef'], publicKeys: [KEY] } },
      /push\.tokens: with access\.read: tokens, pushers must read too: move each push token into a file .*scopes: \[read, push\]/,
    ],
    ['an unknown access key', { access: { read: 'tokens', secret: 'x' } }, /access\.secret: unknown key/],
  ]
  for (const [what, raw, message] of cases) assert.match(issues(raw), message, what)
})
