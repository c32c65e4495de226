/**
 * `narthex client-config`: the lines a Nix client needs, where users trip over
 * them (system-wide, or trusted-users), checked with the real `nix`: the
 * printed text is a nix.conf nix reads as meant, the NixOS block is valid Nix,
 * and the printed check command succeeds against a running narthex.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, test } from 'node:test'
import { formatClientSetup } from '../../src/server/index.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { clientCommand, nixSkipReason } from '../helpers/nix.js'

const run = promisify(execFile)
const KEY = 'narthex-1:4pPqJW3Gk1zQ0k0W4JfKq3H0o9mJbqH3m1sE3m7oN8E='

test('the text says where the lines go, why, the trusted-users alternative, the check and fallback', () => {
  const text = formatClientSetup({ url: 'http://cache.lan:5557', publicKeys: [KEY] })
  assert.match(text, /^substituters = http:\/\/cache\.lan:5557$/m)
  assert.match(text, new RegExp(`^trusted-public-keys = ${KEY.replace(/[+/]/g, '\\$&')}$`, 'm'))
  assert.match(text, /^fallback = true$/m)
  assert.match(text, /\/etc\/nix\/nix\.conf/)
  assert.match(text, /ignoring untrusted substituter/)
  assert.match(text, /trusted-users = root @wheel/)
  assert.match(text, /store ping --store http:\/\/cache\.lan:5557/)
  assert.match(text, /503/)
  const nixos = formatClientSetup({ url: 'http://cache.lan:5557', publicKeys: [KEY] }, { nixos: true })
  assert.match(nixos, /^nix\.settings = \{\n {2}substituters = \[ "http:\/\/cache\.lan:5557" \];$/m)
  assert.match(nixos, /nixos-rebuild switch/)
  assert.doesNotMatch(nixos, /^substituters = /m, 'no nix.conf line in the NixOS text')
})

test('the URL is --url, else the config\'s publicUrl, else its listen address', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-client-config-'))
  try {
    const file = join(dir, 'c.yaml')
    await writeFile(file, `listen: "0.0.0.0:6001"\ndataDir: "${dir}/data"\n`)
    assert.match((await runCli(['client-config', '--config', file])).stdout, /^substituters = http:\/\/<this-host>:6001$/m)
    await writeFile(file, `listen: "0.0.0.0:6001"\ndataDir: "${dir}/data"\npublicUrl: "https://nix-cache.example.org/"\n`)
    const r = await runCli(['client-config', '--config', file, '--nixos'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /substituters = \[ "https:\/\/nix-cache\.example\.org" \];/)
    assert.match((await runCli(['client-config', '--config', file, '--url', 'http://10.0.0.5:5557'])).stdout, /^substituters = http:\/\/10\.0\.0\.5:5557$/m)
    await writeFile(file, `dataDir: "${dir}/data"\npublicUrl: "ftp://x"\n`)
    assert.equal((await runCli(['client-config', '--config', file])).code, 2, 'a publicUrl that is not http(s) is a configuration error')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

describe('with the real nix', { skip: nixSkipReason() }, () => {
  let narthex: NarthexProcess
  let dir: string
  let text: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    narthex = await NarthexProcess.start({})
    dir = await mkdtemp(join(tmpdir(), 'narthex-client-nix-'))
    const r = await runCli(['client-config', '--config', narthex.configFile, '--url', narthex.url])
    assert.equal(r.code, 0, r.stderr)
    text = r.stdout
    // The whole printed text as the system-wide nix.conf, and no other configuration.
    await writeFile(join(dir, 'nix.conf'), text)
    const { NIX_CONFIG: _, ...rest } = process.env
    env = { ...rest, NIX_CONF_DIR: dir, XDG_CONFIG_HOME: join(dir, 'none'), XDG_CONFIG_DIRS: join(dir, 'none'), XDG_CACHE_HOME: join(dir, 'cache') }
  })

  after(async () => {
    await narthex?.cleanup()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  test('nix reads the printed nix.conf as meant: narthex, its key, fallback', async () => {
    const { stdout, stderr } = await run(clientCommand('nix'), ['--extra-experimental-features', 'nix-command', 'show-config'], { env })
    assert.doesNotMatch(stderr, /warning/i)
    assert.match(stdout, new RegExp(`^substituters = ${narthex.url.replace(/\./g, '\\.')}$`, 'm'))
    assert.ok(stdout.split('\n').includes(`trusted-public-keys = ${narthex.publicKey}`), stdout)
    assert.match(stdout, /^fallback = true$/m)
  })

  test('the printed check command succeeds against the running narthex', async () => {
    const line = text.split('\n').find((l) => l.includes('store ping'))
    assert.ok(line, text)
    const [cmd, ...args] = line.replace(/^#\s*/, '').trim().split(/\s+/)
    assert.equal(cmd, 'nix')
    const { stdout, stderr } = await run(clientCommand('nix'), args, { env })
    assert.ok(`${stdout}${stderr}`.includes(narthex.url), `${stdout}${stderr}`)
  })

  test('the NixOS block is a valid Nix expression with the URL and key', async () => {
    const r = await runCli(['client-config', '--config', narthex.configFile, '--url', narthex.url, '--nixos'])
    const block = r.stdout.split('\n').filter((l) => !l.startsWith('#')).join('\n').split('\n\n')[0]
    const { stdout } = await run(clientCommand('nix-instantiate'), ['--eval', '--strict', '--json', '-E', `{ ${block} }`], { env })
    assert.deepEqual(JSON.parse(stdout), { nix: { settings: { substituters: [narthex.url], 'trusted-public-keys': [narthex.publicKey], fallback: true } } })
  })
})
