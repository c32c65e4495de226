#!/usr/bin/env node
// Runs every test file under test/ with node's test runner through tsx, then runs the files that
// drive a Nix client against narthex a second time with Nix 2.26 as the client (the trixie root
// scripts/nix-root.sh makes) when that root is there. Node 20's --test takes paths, not globs, so
// the files are listed here.
//
// Usage: node scripts/run-tests.mjs [--nix226-only] [substring-filter...]
//   --nix226-only  run only the Nix 2.26 pass (of the client files matching the filters)
// With NARTHEX_TEST_NIX already set, runs the matching files once, with that client.
// With CI=true a missing Nix 2.26 root fails the run instead of skipping the second pass.
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const nix226Bin = join(root, 'scripts', 'nix-2.26', 'bin')
// The files whose tests substitute from (or push to) narthex with a Nix client. Other files use
// nix only to build paths and write upstream caches, always with the machine's nix.
const CLIENT_FILES = ['test/e2e/', 'test/helpers/nix.test.ts']

function find(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) {
      if (name !== 'fixtures') out.push(...find(p))
    } else if (name.endsWith('.test.ts')) out.push(relative(root, p))
  }
  return out
}

function runFiles(files, env) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=600000', ...files], {
    cwd: root,
    stdio: 'inherit',
    env,
  })
  return result.status ?? 1
}

/** `undefined` when the Nix 2.26 wrappers run and say 2.26, else why not. */
function nix226Problem() {
  const r = spawnSync(join(nix226Bin, 'nix'), ['--version'], { encoding: 'utf8' })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim()
  if (r.status === 0 && / 2\.26\./.test(out)) return undefined
  return out || String(r.error ?? `exit ${r.status}`)
}

const args = process.argv.slice(2)
const only226 = args.includes('--nix226-only')
const filters = args.filter((a) => a !== '--nix226-only')
const files = find(join(root, 'test')).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
const clientFiles = process.env.NARTHEX_TEST_NIX ? [] : files.filter((f) => CLIENT_FILES.some((c) => f.startsWith(c)))
if (files.length === 0 || (only226 && clientFiles.length === 0)) {
  console.error('no test files matched')
  process.exit(1)
}

let status = only226 ? 0 : runFiles(files, process.env)
if (clientFiles.length > 0) {
  const problem = nix226Problem()
  if (problem === undefined) {
    console.log(`\n# the same end-to-end tests with Nix 2.26 as the client (NARTHEX_TEST_NIX=${nix226Bin})`)
    const second = runFiles(clientFiles, { ...process.env, NARTHEX_TEST_NIX: nix226Bin })
    if (second !== 0) status = second
  } else if (process.env.CI === 'true' || only226) {
    console.error(`\nFAILED: the Nix 2.26 client is required${only226 ? '' : ' in CI'} but does not run: ${problem}\nPrepare it with scripts/nix-root.sh (as root).`)
    status = 1
  } else {
    console.error(`\nSKIPPED: the Nix 2.26 pass of ${clientFiles.length} file(s): ${problem}\nPrepare the client with scripts/nix-root.sh (as root) to run it.`)
  }
}
process.exit(status)
