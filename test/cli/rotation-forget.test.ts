/**
 * The command line of key rotation (`signingKeyFile` as a list) and of
 * `narthex forget`: messages and exit codes, without a running narthex.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { runCli as narthex } from '../helpers/narthex.js'

function workDir(): string {
  return mkdtempSync(join(tmpdir(), 'narthex-cli-'))
}

test('client-config prints every signing key of a list, the first created when missing', async () => {
  const dir = workDir()
  const second = await narthex(['keygen', 'narthex-2'])
  writeFileSync(join(dir, 'two.key'), second.stdout, { mode: 0o600 })
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\nsigningKeyFile: ["${dir}/one.key", "${dir}/two.key"]\n`)
  const r = await narthex(['client-config', '--config', file])
  assert.equal(r.code, 0, r.stderr)
  const line = r.stdout.split('\n').find((l) => l.startsWith('trusted-public-keys = '))
  assert.ok(line, r.stdout)
  const keys = line.slice('trusted-public-keys = '.length).split(' ')
  assert.equal(keys.length, 2)
  assert.match(keys[0], /^narthex-1:/)
  assert.equal(keys[1], second.stderr.trim())
  assert.ok(existsSync(join(dir, 'one.key')))
})

test('a later signing key that is missing, or shares a name with an earlier one, is a configuration error (exit 2) that creates nothing', async () => {
  const dir = workDir()
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\nsigningKeyFile: ["${dir}/one.key", "${dir}/absent.key"]\n`)
  const missing = await narthex(['client-config', '--config', file])
  assert.equal(missing.code, 2)
  assert.match(missing.stderr, /signingKeyFile\[1\] .*absent\.key does not exist.*narthex keygen/)
  assert.equal(existsSync(join(dir, 'one.key')), false, 'the first key is not created for a list that cannot be used')

  const twin = await narthex(['keygen', 'narthex-1'])
  writeFileSync(join(dir, 'twin.key'), twin.stdout, { mode: 0o600 })
  writeFileSync(file, `dataDir: "${dir}/data"\nsigningKeyFile: ["${dir}/one.key", "${dir}/twin.key"]\n`)
  const same = await narthex(['client-config', '--config', file])
  assert.equal(same.code, 2)
  assert.match(same.stderr, /key name "narthex-1" is already used/)
})

test('narthex forget: exit 2 for something that is no store path, exit 1 when narthex knows nothing of the path', async () => {
  const dir = workDir()
  const file = join(dir, 'c.yaml')
  writeFileSync(file, `dataDir: "${dir}/data"\n`)
  const bad = await narthex(['forget', 'not a path', '--config', file])
  assert.equal(bad.code, 2)
  const unknown = await narthex(['forget', '/nix/store/00000000000000000000000000000000-x', '--config', file])
  assert.equal(unknown.code, 1, unknown.stderr)
  assert.match(unknown.stdout, /nothing to forget/)
  assert.equal((await narthex(['forget', '--config', file])).code, 2, 'the store path is required')
})
