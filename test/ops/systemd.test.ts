/**
 * config/narthex.service, the systemd unit users install: systemd itself accepts it without a
 * warning, it is as hardened as it says, and it starts narthex on the config it ships with.
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

const UNIT_FILE = fileURLToPath(new URL('../../config/narthex.service', import.meta.url))
const UNIT = readFileSync(UNIT_FILE, 'utf8')
const withSystemd = needs('systemd-analyze', "apt-get install -y systemd (it brings systemd-analyze)")

/** The unit's `Key=Value` lines by section, every value of a repeated key in order. */
function parseUnit(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>()
  let section = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    assert.ok(!line.endsWith('\\'), `no continued lines, so this parser reads the unit as systemd does: ${line}`)
    const head = /^\[(\w+)\]$/.exec(line)
    if (head) {
      section = head[1]!
      continue
    }
    const eq = line.indexOf('=')
    assert.ok(eq > 0, `a Key=Value line: ${line}`)
    const key = `${section}.${line.slice(0, eq)}`
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)])
  }
  return keys
}

const unit = parseUnit(UNIT)
const one = (key: string): string | undefined => unit.get(`Service.${key}`)?.at(-1)
const execStart = one('ExecStart')!.split(/\s+/)

function analyze(args: string[]): { code: number | null; output: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8' })
  return { code: r.status, output: `${r.stdout}${r.stderr}` }
}

test('systemd-analyze verify accepts the unit without a warning', withSystemd, () => {
  // verify checks that ExecStart's program exists: a copy of the unit runs this node instead of
  // /usr/bin/node, which a developer's machine may not have. Nothing else changes.
  const dir = mkdtempSync(join(tmpdir(), 'narthex-unit-'))
  try {
    const copy = join(dir, 'narthex.service')
    writeFileSync(copy, UNIT.replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`))
    const { code, output } = analyze(['verify', copy])
    assert.equal(code, 0, output)
    const aboutUnit = output.split('\n').filter((l) => l.includes('narthex.service'))
    assert.deepEqual(aboutUnit, [], 'no warning about the unit (unknown keys and bad values are only warnings)')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test("systemd-analyze security rates the unit's exposure 2.0 or lower", withSystemd, () => {
  const { code, output } = analyze(['security', '--offline=yes', '--threshold=20', UNIT_FILE])
  assert.equal(code, 0, output.split('\n').filter((l) => l.includes('✗') || l.includes('exposure')).join('\n'))
})

test('the unit has the hardening it documents, and none that breaks node', () => {
  const expected: Record<string, string> = {
    NoNewPrivileges: 'yes',
    CapabilityBoundingSet: '',
    ProtectSystem: 'strict',
    ProtectHome: 'yes',
    PrivateTmp: 'yes',
    PrivateDevices: 'yes',
    LockPersonality: 'yes',
    RestrictNamespaces: 'yes',
    RestrictSUIDSGID: 'yes',
    SystemCallArchitectures: 'native',
  }
  for (const [key, value] of Object.entries(expected)) assert.equal(one(key), value, key)
  assert.deepEqual(unit.get('Service.SystemCallFilter'), ['@system-service', '~@privileged'])
  // IP for clients and upstreams, AF_UNIX for name lookups (nscd, systemd-resolved); nothing else.
  assert.deepEqual(one('RestrictAddressFamilies')?.split(' ').sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX'])
  // V8's JIT needs writable-then-executable pages: node aborts under MemoryDenyWriteExecute=yes.
  assert.equal(one('MemoryDenyWriteExecute'), undefined)
})

test('the unit restarts narthex on failure but not on a bad config, and stops it gracefully', () => {
  assert.equal(one('Restart'), 'on-failure')
  assert.equal(one('RestartPreventExitStatus'), '2', 'exit 2 is a bad configuration')
  // SIGTERM to the primary alone: it stops its workers itself (test/e2e/workers.test.ts).
  assert.equal(one('KillMode'), 'mixed')
  // Workers get 15 s to finish their requests, then the core 10 s for its open responses.
  const stopSec = Number(/^(\d+)s$/.exec(one('TimeoutStopSec') ?? '')?.[1])
  assert.ok(stopSec >= 30, `TimeoutStopSec leaves room for narthex's own 25 s: ${one('TimeoutStopSec')}`)
  // SIGHUP re-reads the credential files (core and workers): that is what a reload can do.
  assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID')
})

test('the unit runs narthex serve on /etc/narthex/narthex.yaml, whose shipped version keeps data in the StateDirectory', () => {
  assert.equal(execStart[0], '/usr/bin/node')
  assert.ok(execStart.includes('--max-semi-space-size=2'), 'node is started as bin/narthex.js starts it')
  assert.deepEqual(execStart.slice(-3), ['serve', '--config', '/etc/narthex/narthex.yaml'])
  assert.equal(one('StateDirectory'), 'narthex')
  assert.equal(one('WorkingDirectory'), '/var/lib/narthex')
  const config = loadConfig(fileURLToPath(new URL('../../config/systemd.yaml', import.meta.url)), '/')
  assert.equal(config.dataDir, '/var/lib/narthex')
  assert.equal(config.signingKeyFile, '/var/lib/narthex/narthex.key')
})
