/**
 * The command line as users meet it: help, exit codes, messages.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatPublicKey, parseSecretKey, toPublicKey } from '../../src/protocol/index.js'
import { runCli as narthex } from '../helpers/narthex.js'

const COMMANDS = ['serve', 'mirror', 'export', 'import', 'explain', 'verify', 'gc', 'forget', 'keygen', 'audit', 'client-config']

test('--help lists every command of the public interface', async () => {
  const r = await narthex(['--help'])
  assert.equal(r.code, 0)
  for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`narthex ${c}\\b`), c)
  for (const c of COMMANDS) {
    const sub = await narthex([c, '--help'])
    assert.equal(sub.code, 0, c)
    assert.match(sub.stdout, /--config/, `${c} takes --config`)
  }
})

test('mirror, export and import refuse bad usage with exit 2 before touching anything', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\n`)
  const mirror = await narthex(['mirror', '--config', file])
  assert.equal(mirror.code, 2)
  assert.match(mirror.stderr, /name store paths to mirror/)
  const badPath = await narthex(['mirror', '/nix/store/not-a-path', '--config', file])
  assert.equal(badPath.code, 2)
  const exp = await narthex(['export', '--config', file])
  assert.equal(exp.code, 2)
  assert.match(exp.stderr, /required argument: to/)
  const imp = await narthex(['import', dir, '--config', file])
  assert.equal(imp.code, 2)
  assert.match(imp.stderr, /import\.publicKeys/)
})

test('bad usage exits 2 with a message', async () => {
  const none = await narthex([])
  assert.equal(none.code, 2)
  assert.match(none.stderr, /name a command/)
  const unknown = await narthex(['serv'])
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /serve/, 'suggests the closest command')
})

test('a bad config exits 2 naming the file and the field', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'upstreams:\n  - name: x\n    url: "ftp://nope"\n')
  const r = await narthex(['serve', '--config', file])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /bad\.yaml/)
  assert.match(r.stderr, /upstreams\.0\.url/)
  const missing = await narthex(['serve', '--config', join(dir, 'missing.yaml')])
  assert.equal(missing.code, 2)
  assert.match(missing.stderr, /missing\.yaml: cannot read/)
})

test('keygen prints a secret key on stdout and its public key on stderr; --public derives it again', async () => {
  const r = await narthex(['keygen', 'cache.example.org-1'])
  assert.equal(r.code, 0)
  assert.match(r.stdout.trim(), /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/)
  assert.match(r.stderr.trim(), /^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/)
  const p = await narthex(['keygen', '--public'], r.stdout)
  assert.equal(p.stdout.trim(), r.stderr.trim())
  assert.equal((await narthex(['keygen', 'bad name'])).code, 2)
  assert.equal((await narthex(['keygen', '--public'], 'garbage')).code, 2)
})

test('client-config prints the nix.conf lines with narthex\'s public key', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `listen: "127.0.0.1:6001"\ndataDir: "${dir}/data"\n`)
  const r = await narthex(['client-config', '--config', file])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^substituters = http:\/\/127\.0\.0\.1:6001\ntrusted-public-keys = narthex-1:[A-Za-z0-9+/]{43}=$/m)
  const again = await narthex(['client-config', '--config', file, '--url', 'http://cache.lan:5557'])
  assert.match(again.stdout, /^substituters = http:\/\/cache\.lan:5557$/m)
  const keyLine = (text: string) => text.split('\n').find((l) => l.startsWith('trusted-public-keys = '))
  assert.equal(keyLine(again.stdout), keyLine(r.stdout), 'the key created on first use is kept')
})

test('--data DIR moves the default signing key to DIR/narthex.key; an explicit signingKeyFile stays put', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\n`)
  const r = await narthex(['export', '--to', join(dir, 'out'), '--config', file, '--data', join(dir, 'other')])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(existsSync(join(dir, 'data', 'narthex.key')), false, 'no key in the data directory of the config')
  const key = formatPublicKey(toPublicKey(parseSecretKey(readFileSync(join(dir, 'other', 'narthex.key'), 'utf8'))))
  assert.ok(r.stdout.includes(key), 'the export is signed with the key in --data')
  const cc = await narthex(['client-config', '--config', file, '--data', join(dir, 'other')])
  assert.equal(cc.code, 0, cc.stderr)
  assert.ok(cc.stdout.split('\n').includes(`trusted-public-keys = ${key}`), cc.stdout)

  const fixed = join(dir, 'fixed.yaml')
  writeFileSync(fixed, `dataDir: "${dir}/data"\nsigningKeyFile: "${dir}/fixed.key"\n`)
  const f = await narthex(['export', '--to', join(dir, 'out2'), '--config', fixed, '--data', join(dir, 'other2')])
  assert.equal(f.code, 0, f.stderr)
  assert.equal(existsSync(join(dir, 'fixed.key')), true)
  assert.equal(existsSync(join(dir, 'other2', 'narthex.key')), false)
})

test('narthex audit refuses a malformed --since with exit 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\n`)
  const r = await narthex(['audit', '--config', file, '--since', 'yesterday-ish'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /--since: not a time/)
})
