/**
 * config/nixos/narthex.nix, the NixOS module `services.narthex`: Nix parses it, it runs the
 * service exactly as hardened as config/narthex.service, opens the port it listens on, and (where
 * a nixpkgs lib is on NIX_PATH) nixpkgs' module system renders settings narthex accepts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../../src/config/index.js'
import { needs } from './tool.js'

const MODULE = fileURLToPath(new URL('../../config/nixos/narthex.nix', import.meta.url))
const EVAL = fileURLToPath(new URL('./nixos-module.nix', import.meta.url))
const UNIT = readFileSync(fileURLToPath(new URL('../../config/narthex.service', import.meta.url)), 'utf8')
const withNix = needs('nix-instantiate', 'apt-get install -y nix-bin')

/** What test/ops/nixos-module.nix answers. */
interface Evaluated {
  serviceConfig: Record<string, unknown>
  description: string
  wants: string[]
  after: string[]
  wantedBy: string[]
  allowedTCPPorts: number[]
  tmpfiles: string[]
  settings: Record<string, unknown>
  configFile: string
  package: string
}

function nix(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nix-instantiate', args, { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function evaluate(args: Record<string, string> = {}, nixpkgsLib?: string): Evaluated {
  const argv = ['--eval', '--strict', '--json', EVAL]
  // nix-instantiate 2.8 calls the file's function only when it is given an --arg.
  for (const [name, expr] of Object.entries({ openFirewall: 'false', ...args })) argv.push('--arg', name, expr)
  if (nixpkgsLib) argv.push('--arg', 'nixpkgsLib', nixpkgsLib)
  const r = nix(argv)
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as Evaluated
}

/** A unit's `Key=Value` lines as key → the words of every value, in order (repeated keys add up). */
function unitWords(text: string): Map<string, string[]> {
  const words = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(line.trim())
    if (m) words.set(m[1], [...(words.get(m[1]) ?? []), ...m[2].split(/\s+/).filter(Boolean)])
  }
  return words
}

/** A serviceConfig value as the words NixOS writes into the unit (booleans as yes/no). */
function nixWords(value: unknown): string[] {
  const list = Array.isArray(value) ? value : [value]
  return list.flatMap((v) => (v === true ? ['yes'] : v === false ? ['no'] : String(v).split(/\s+/).filter(Boolean)))
}

// nixpkgs is not installed here (nor in CI). Where NIX_PATH finds one, the tests below run on
// nixpkgs' module system too, and the last one runs at all.
const nixpkgsLib = withNix.skip ? undefined : nix(['--find-file', 'nixpkgs/lib']).stdout.trim() || undefined
const withNixpkgs = withNix.skip
  ? withNix
  : nixpkgsLib
    ? {}
    : { skip: 'SKIPPED: no nixpkgs on NIX_PATH (NIX_PATH=nixpkgs=/path/to/nixpkgs runs it with the real module system)' }
if (withNixpkgs.skip && !withNix.skip) process.stderr.write(`${withNixpkgs.skip}\n`)

/** The module systems to evaluate with: the stub lib always, nixpkgs' lib where it is found. */
const LIBS: Array<string | undefined> = [undefined, ...(nixpkgsLib ? [nixpkgsLib] : [])]

test('nix-instantiate parses the module', withNix, () => {
  const r = nix(['--parse', MODULE])
  assert.equal(r.code, 0, r.stderr)
})

test('the NixOS service has every setting of config/narthex.service, with the same values', withNix, () => {
  const [unitPart, servicePart] = UNIT.split(/^\[Service\]$/m)
  const unit = unitWords(servicePart.split(/^\[Install\]$/m)[0])
  // ExecStart and ExecReload differ by design (the package's bin/narthex, the rendered config,
  // coreutils' kill from the store).
  unit.delete('ExecStart')
  unit.delete('ExecReload')
  const head = unitWords(unitPart)
  for (const lib of LIBS) {
    const { serviceConfig, description, wants, after, wantedBy, package: pkg, configFile } = evaluate({}, lib)
    assert.equal(serviceConfig.ExecStart, `${pkg}/bin/narthex serve --config ${configFile}`)
    const onNixos = new Map(Object.entries(serviceConfig).map(([k, v]) => [k, nixWords(v)]))
    onNixos.delete('ExecStart')
    assert.equal(serviceConfig.ExecReload, '/coreutils/bin/kill -HUP $MAINPID')
    onNixos.delete('ExecReload')
    // Set only for a dataDir outside the StateDirectory (next test).
    onNixos.delete('ReadWritePaths')
    assert.deepEqual(Object.fromEntries(onNixos), Object.fromEntries(unit))
    assert.equal(description, UNIT.match(/^Description=(.*)$/m)![1])
    assert.deepEqual(wants, head.get('Wants'))
    assert.deepEqual(after, head.get('After'))
    assert.deepEqual(wantedBy, unitWords(UNIT.split(/^\[Install\]$/m)[1]).get('WantedBy'))
  }
})

test('openFirewall opens the port of settings.listen, and only when asked', withNix, () => {
  for (const lib of LIBS) {
    assert.deepEqual(evaluate({}, lib).allowedTCPPorts, [])
    assert.deepEqual(evaluate({ openFirewall: 'true' }, lib).allowedTCPPorts, [5557])
    assert.deepEqual(evaluate({ openFirewall: 'true', settings: '{ listen = "[::1]:8080"; }' }, lib).allowedTCPPorts, [8080])
  }
})

test('a dataDir outside /var/lib/narthex is created for the narthex user and made writable', withNix, () => {
  for (const lib of LIBS) {
    const moved = evaluate({ settings: '{ dataDir = "/srv/narthex"; }' }, lib)
    assert.deepEqual(moved.tmpfiles, ["d '/srv/narthex' 0750 narthex narthex - -"])
    assert.deepEqual(moved.serviceConfig.ReadWritePaths, ['/srv/narthex'])
    assert.equal(moved.serviceConfig.WorkingDirectory, '/srv/narthex')
    const usual = evaluate({}, lib)
    assert.deepEqual(usual.tmpfiles, [])
    assert.deepEqual(usual.serviceConfig.ReadWritePaths, [])
  }
})

test("nixpkgs' module system renders default and user settings that narthex accepts", withNixpkgs, () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-nixos-'))
  try {
    const check = (settings: Record<string, unknown>) => {
      const file = join(dir, 'narthex.yaml')
      writeFileSync(file, JSON.stringify(settings))
      return loadConfig(file, '/')
    }
    const defaults = evaluate({}, nixpkgsLib)
    const config = check(defaults.settings)
    assert.equal(config.dataDir, '/var/lib/narthex')
    assert.equal(config.signingKeyFile, '/var/lib/narthex/narthex.key')
    assert.deepEqual(config.upstreams.map((u) => u.name), ['nixos'])
    const own = evaluate({ settings: '{ dataDir = "/srv/n"; upstreams = [ { name = "corp"; url = "https://cache.corp.example"; } ]; rules = [ { match = "*"; upstreams = [ "corp" ]; minSignatures = 0; } ]; workers = 0; }' }, nixpkgsLib)
    const mine = check(own.settings)
    assert.deepEqual(mine.upstreams.map((u) => u.name), ['corp'], 'a definition replaces the default upstreams')
    assert.equal(mine.signingKeyFile, '/srv/n/narthex.key', 'the key follows dataDir')
    assert.equal(mine.workers, 0)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
