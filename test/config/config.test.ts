import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildConfig, loadConfig, parseByteSize } from '../../src/config/index.js'
import type { NarthexError } from '../../src/errors.js'

const KEY_A = 'a-1:tLAEn+EeaBUJYqEpTd2yeerr7Ic6+0vWe+aXL/vYUpE='
const KEY_B = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='
const HASH = 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr'
const up = (name: string, key = KEY_A) => ({ name, url: `http://127.0.0.1:1/${name}`, publicKeys: [key] })

test('the shipped configurations are valid', () => {
  for (const file of ['narthex.yaml', 'docker.yaml', 'company.example.yaml']) {
    const cfg = loadConfig(new URL(`../../config/${file}`, import.meta.url).pathname, '/srv')
    assert.ok(cfg.upstreams.length > 0, file)
    assert.ok(cfg.dataDir.startsWith('/'), file)
  }
})

test('defaults: relative paths resolve from the base directory; no rules means every upstream in order', () => {
  const cfg = buildConfig({ upstreams: [up('x'), up('y')] }, '/srv/narthex')
  assert.equal(cfg.listen, '127.0.0.1:5557')
  assert.equal(cfg.dataDir, '/srv/narthex/var')
  assert.equal(cfg.signingKeyFile, '/srv/narthex/var/narthex.key')
  assert.deepEqual(cfg.rules, [{ match: ['*'], upstreams: ['x', 'y'], minSignatures: 1, onConflict: 'priority' }])
  assert.deepEqual(cfg.deny, { keys: [], paths: [] })
  assert.equal(cfg.upstreams[0].timeoutMs, 5000)
  assert.equal(cfg.upstreams[0].url, 'http://127.0.0.1:1/x')
})

test('bad configurations are refused with CONFIG_INVALID naming the field', () => {
  const rows: Array<[string, unknown, string]> = [
    ['unknown top-level key', { upstreams: [up('x')], bogus: 1 }, 'bogus'],
    ['unknown upstream key', { upstreams: [{ ...up('x'), colour: 'red' }] }, 'upstreams.0'],
    ['malformed public key', { upstreams: [{ ...up('x'), publicKeys: ['nonsense'] }] }, 'upstreams.0.publicKeys.0'],
    ['non-http url', { upstreams: [{ ...up('x'), url: 'ftp://x' }] }, 'upstreams.0.url'],
    ['url with a tab the URL parser would drop', { upstreams: [{ ...up('x'), url: '\thttps://x' }] }, 'upstreams.0.url'],
    ['url with a space', { upstreams: [{ ...up('x'), url: 'https://x/a b' }] }, 'upstreams.0.url'],
    // Blanks beyond ASCII, which a trimming URL check would accept and the URL parser then refuses.
    ['url with a no-break space', { upstreams: [{ ...up('x'), url: '\u00a0https://x' }] }, 'upstreams.0.url'],
    ['url with a byte-order mark', { upstreams: [{ ...up('x'), url: '\ufeffhttps://x' }] }, 'upstreams.0.url'],
    ['url with an ideographic space', { upstreams: [{ ...up('x'), url: 'https://x\u3000' }] }, 'upstreams.0.url'],
    ['url with a line separator', { upstreams: [{ ...up('x'), url: '\u2028https://x' }] }, 'upstreams.0.url'],
    ['url without // after the scheme', { upstreams: [{ ...up('x'), url: 'https:..//x' }] }, 'upstreams.0.url'],
    ['url with a zero-width space', { upstreams: [{ ...up('x'), url: 'https://x\u200b/y' }] }, 'upstreams.0.url'],
    ['duplicate upstream', { upstreams: [up('x'), up('x')] }, 'upstreams.1.name'],
    ['unknown upstream in a rule', { upstreams: [up('x')], rules: [{ match: '*', upstreams: ['nope'] }] }, 'rules.0.upstreams.0'],
    ['rule after a catch-all', { upstreams: [up('x')], rules: [{ match: '*', upstreams: ['x'] }, { match: 'corp-*', upstreams: ['x'] }] }, 'rules.1'],
    ['k larger than the trusted keys', { upstreams: [up('x')], rules: [{ match: '*', upstreams: ['x'], minSignatures: 2 }] }, 'rules.0.minSignatures'],
    ['k larger than the explicit trusted keys', { upstreams: [up('x'), up('y', KEY_B)], rules: [{ match: '*', upstreams: ['x', 'y'], minSignatures: 2, trustedKeys: [KEY_A] }] }, 'rules.0.minSignatures'],
    ['bad store path pin', { upstreams: [up('x')], rules: [{ match: '/nix/store/short-x', upstreams: ['x'] }] }, 'rules.0.match'],
    ['glob with a slash', { upstreams: [up('x')], rules: [{ match: 'a/b*', upstreams: ['x'] }] }, 'rules.0.match'],
    ['bad listen', { listen: 'localhost', upstreams: [] }, 'listen'],
    ['listen port above 65535', { listen: '127.0.0.1:70000', upstreams: [] }, 'listen'],
    ['bad size', { storage: { maxSize: '12 parsecs' } }, 'storage.maxSize'],
    ['negative timeout', { upstreams: [{ ...up('x'), timeoutMs: -1 }] }, 'upstreams.0.timeoutMs'],
    ['short push token', { push: { tokens: ['short'] } }, 'push.tokens.0'],
    ['unknown onConflict', { upstreams: [up('x')], rules: [{ match: '*', upstreams: ['x'], onConflict: 'ignore' }] }, 'rules.0.onConflict'],
    ['deny key neither a key nor a name', { deny: { keys: ['not a key!'] } }, 'deny.keys.0'],
    ['deny key with bad base64', { deny: { keys: ['a-1:short'] } }, 'deny.keys.0'],
    ['deny path neither a store path nor a hash part', { deny: { paths: ['hello-1.0'] } }, 'deny.paths.0'],
    ['deny path with a bad hash part', { deny: { paths: ['/nix/store/short-x'] } }, 'deny.paths.0'],
    ['deny hash part of the wrong length', { deny: { paths: [HASH.slice(1)] } }, 'deny.paths.0'],
    ['unknown deny key', { deny: { hashes: [] } }, 'deny.hashes'],
    ['k larger than the keys deny.keys leaves (by key)', { upstreams: [up('x')], rules: [{ match: '*', upstreams: ['x'] }], deny: { keys: [KEY_A] } }, 'rules.0.minSignatures'],
    ['k larger than the keys deny.keys leaves (by name)', { upstreams: [up('x'), up('y', KEY_B)], rules: [{ match: '*', upstreams: ['x', 'y'], minSignatures: 2 }], deny: { keys: ['a-1'] } }, 'rules.0.minSignatures'],
    ['push keys all denied', { push: { tokens: ['0123456789abcdef'], publicKeys: [KEY_A] }, deny: { keys: [KEY_A] } }, 'push.minSignatures'],
    ['import keys all denied', { import: { publicKeys: [KEY_A] }, deny: { keys: ['a-1'] } }, 'import.minSignatures'],
  ]
  for (const [why, raw, field] of rows) {
    assert.throws(
      () => buildConfig(raw, '/srv'),
      (err: { code?: string; message: string }) => {
        assert.equal(err.code, 'CONFIG_INVALID', why)
        assert.ok(err.message.includes(`  ${field}`), `${why}: ${err.message}`)
        return true
      },
      why,
    )
  }
})

test('rules: onConflict, deny rules without minSignatures, and the deny lists', () => {
  const cfg = buildConfig(
    {
      upstreams: [up('x'), up('y', KEY_B)],
      rules: [
        { match: 'corp-*', upstreams: ['x', 'y'], onConflict: 'refuse' },
        { match: 'blocked-*', upstreams: [] },
        { match: 'pair-*', upstreams: ['x', 'y'], minSignatures: 2 },
        // A catch-all deny rule needs no minSignatures and stops nothing at start.
        { match: '*', upstreams: [] },
      ],
      deny: { keys: ['leaked-1', `leaked-2:${Buffer.alloc(32, 7).toString('base64')}`], paths: [`/nix/store/${HASH}-bad`, HASH] },
    },
    '/srv',
  )
  assert.deepEqual(
    cfg.rules.map((r) => [r.minSignatures, r.onConflict]),
    [
      [1, 'refuse'],
      [0, 'priority'],
      [2, 'priority'],
      [0, 'priority'],
    ],
  )
  assert.deepEqual(cfg.deny.paths, [`/nix/store/${HASH}-bad`, HASH])
  assert.equal(cfg.deny.keys.length, 2)
})

test('a minSignatures error caused by deny.keys says so', () => {
  assert.throws(
    () => buildConfig({ upstreams: [up('x')], rules: [{ match: '*', upstreams: ['x'] }], deny: { keys: [KEY_A] } }, '/srv'),
    (err: { message: string }) => /rules\.0\.minSignatures: minSignatures 1 exceeds the 0 distinct trusted key\(s\) of this rule \(1 on deny\.keys\)/.test(err.message),
  )
})

test('the loader names the file for unreadable files and YAML errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-config-'))
  assert.throws(() => loadConfig(join(dir, 'missing.yaml')), (err: { code?: string; message: string }) => err.code === 'CONFIG_INVALID' && err.message.includes('missing.yaml'))
  await writeFile(join(dir, 'bad.yaml'), 'listen: [unclosed\n')
  assert.throws(() => loadConfig(join(dir, 'bad.yaml')), (err: { code?: string; message: string }) => err.code === 'CONFIG_INVALID' && err.message.includes('not valid YAML'))
  await writeFile(join(dir, 'dup.yaml'), 'listen: "127.0.0.1:1"\nlisten: "127.0.0.1:2"\n')
  assert.throws(() => loadConfig(join(dir, 'dup.yaml')), { code: 'CONFIG_INVALID' })
})

test('sizes', () => {
  assert.equal(parseByteSize('50GiB'), 50 * 1024 ** 3)
  assert.equal(parseByteSize('1.5 MB'), 1_500_000)
  assert.equal(parseByteSize(1024), 1024)
  assert.equal(parseByteSize('10 furlongs'), undefined)
})

test('workers: a number, or auto (one per core, none on one core); 0 by default', async () => {
  const { availableParallelism } = await import('node:os')
  const cores = availableParallelism()
  assert.equal(buildConfig({ upstreams: [up('x')] }, '/srv').workers, 0)
  assert.equal(buildConfig({ upstreams: [up('x')], workers: 3 }, '/srv').workers, 3)
  assert.equal(buildConfig({ upstreams: [up('x')], workers: 'auto' }, '/srv').workers, cores > 1 ? Math.min(cores, 16) : 0)
  assert.throws(() => buildConfig({ upstreams: [up('x')], workers: 'many' }, '/srv'), /workers/)
  assert.throws(() => buildConfig({ upstreams: [up('x')], workers: -1 }, '/srv'), /workers/)
})

test('a --data override moves the default signing key with it, not an explicit one', () => {
  const moved = buildConfig({ dataDir: './var' }, '/srv/narthex', undefined, { dataDir: '/other' })
  assert.equal(moved.dataDir, '/other')
  assert.equal(moved.signingKeyFile, '/other/narthex.key')
  const kept = buildConfig({ signingKeyFile: 'keys/k' }, '/srv/narthex', undefined, { dataDir: '/other' })
  assert.equal(kept.signingKeyFile, '/srv/narthex/keys/k')
  const shipped = loadConfig(new URL('../../config/narthex.yaml', import.meta.url).pathname, '/srv', { dataDir: 'elsewhere' })
  assert.equal(shipped.signingKeyFile, '/srv/elsewhere/narthex.key', 'the shipped config leaves signingKeyFile to follow dataDir')
})

test('a --listen override is checked like the field: CONFIG_INVALID naming the option, not a crash at listen time', () => {
  for (const bad of ['bogus', '127.0.0.1', '127.0.0.1:99999', ':80', '127.0.0.1:80 ']) {
    assert.throws(
      () => buildConfig({}, '/srv', undefined, { listen: bad }),
      (err: NarthexError) => err.code === 'CONFIG_INVALID' && err.message.includes('--listen'),
      bad,
    )
  }
  assert.equal(buildConfig({}, '/srv', undefined, { listen: '[::1]:65535' }).listen, '[::1]:65535')
})
