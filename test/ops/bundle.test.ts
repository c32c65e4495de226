/**
 * The build's bundles (dist/bundle/, scripts/bundle.mjs): V8 accepts their code cache under
 * the flags bin/narthex.js starts node with (a refused cache costs nothing but the start-up
 * time it exists for), and bin/narthex.js runs them. `npm test` builds first.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BIN = `${ROOT}bin/narthex.js`
const LOADER = `${ROOT}dist/cli/bundle-loader.js`

/** The node flags of bin/narthex.js's `#!/usr/bin/env -S node …` line. */
function binFlags(): string[] {
  const shebang = readFileSync(BIN, 'utf8').split('\n')[0]
  const m = /^#!\/usr\/bin\/env -S node((?: --[^\s]+)*)$/.exec(shebang)
  assert.ok(m, `bin/narthex.js starts with "#!/usr/bin/env -S node [flags]": ${shebang}`)
  return m[1].trim().split(/\s+/).filter((f) => f !== '')
}

/** cacheRejected of each bundle, loaded in a node run with `flags`. */
function cacheRejected(flags: string[]): Record<string, boolean | undefined> {
  const script = `
    const { loadBundle } = await import(${JSON.stringify(LOADER)})
    const out = {}
    for (const name of ['main', 'worker']) out[name] = loadBundle(${JSON.stringify(`${ROOT}dist/bundle/`)} + name + '.cjs').cacheRejected ?? null
    console.log(JSON.stringify(out))
    process.exit(0)`
  const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(r.status, 0, r.stderr)
  return JSON.parse(r.stdout) as Record<string, boolean | undefined>
}

test('the bundles have a code cache that V8 accepts under the flags bin/narthex.js runs node with', () => {
  for (const f of ['main.cjs', 'main.cjs.cache', 'worker.cjs', 'worker.cjs.cache', 'verify-thread.cjs']) {
    assert.ok(existsSync(`${ROOT}dist/bundle/${f}`), `dist/bundle/${f} is missing: run npm run build`)
  }
  const flags = binFlags()
  assert.ok(flags.length > 0)
  assert.deepEqual(cacheRejected(flags), { main: false, worker: false })
  // Under other V8 flags the cache is refused, and the bundle still runs (compiled as without one).
  assert.deepEqual(cacheRejected(['--max-semi-space-size=16']), { main: true, worker: true })
})

test('bin/narthex.js runs the bundled command line', () => {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }
  const r = spawnSync(process.execPath, [...binFlags(), BIN, '--version'], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout.trim(), pkg.version)
})
