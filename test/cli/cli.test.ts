/**
 * The command line as users meet it: help, exit codes, messages.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BIN, ROOT } from '../helpers/narthex.js'

function narthex(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, input, encoding: 'utf8', timeout: 20_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const COMMANDS = ['serve', 'mirror', 'export', 'import', 'explain', 'verify', 'gc', 'keygen', 'audit', 'client-config']

test('--help lists every command of the public interface', () => {
  const r = narthex(['--help'])
  assert.equal(r.code, 0)
  for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`narthex ${c}\\b`), c)
  for (const c of COMMANDS) {
    const sub = narthex([c, '--help'])
    assert.equal(sub.code, 0, c)
    assert.match(sub.stdout, /--config/, `${c} takes --config`)
  }
})

test('commands not built yet say so and exit 2', () => {
  for (const c of ['mirror', 'export', 'import dir', 'gc']) {
    const r = narthex(c.split(' '))
    assert.equal(r.code, 2, c)
    assert.match(r.stderr, /not available in this version/, c)
  }
})

test('bad usage exits 2 with a message', () => {
  const none = narthex([])
  assert.equal(none.code, 2)
  assert.match(none.stderr, /name a command/)
  const unknown = narthex(['serv'])
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /serve/, 'suggests the closest command')
})

test('a bad config exits 2 naming the file and the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'upstreams:\n  - name: x\n    url: "ftp://nope"\n')
  const r = narthex(['serve', '--config', file])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /bad\.yaml/)
  assert.match(r.stderr, /upstreams\.0\.url/)
  const missing = narthex(['serve', '--config', join(dir, 'missing.yaml')])
  assert.equal(missing.code, 2)
  assert.match(missing.stderr, /missing\.yaml: cannot read/)
})

test('keygen prints a secret key on stdout and its public key on stderr; --public derives it again', () => {
  const r = narthex(['keygen', 'cache.example.org-1'])
  assert.equal(r.code, 0)
  assert.match(r.stdout.trim(), /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/)
  assert.match(r.stderr.trim(), /^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/)
  const p = narthex(['keygen', '--public'], r.stdout)
  assert.equal(p.stdout.trim(), r.stderr.trim())
  assert.equal(narthex(['keygen', 'bad name']).code, 2)
  assert.equal(narthex(['keygen', '--public'], 'garbage').code, 2)
})

test('client-config prints the nix.conf lines with narthex\'s public key', () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-cli-'))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `listen: "127.0.0.1:6001"\ndataDir: "${dir}/data"\n`)
  const r = narthex(['client-config', '--config', file])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /^substituters = http:\/\/127\.0\.0\.1:6001\ntrusted-public-keys = narthex-1:[A-Za-z0-9+/]{43}=\n$/)
  const again = narthex(['client-config', '--config', file, '--url', 'http://cache.lan:5557'])
  assert.match(again.stdout, /substituters = http:\/\/cache\.lan:5557/)
  assert.equal(again.stdout.split('\n')[1], r.stdout.split('\n')[1], 'the key created on first use is kept')
})
