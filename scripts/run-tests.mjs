#!/usr/bin/env node
// Runs every test file under test/ with node's test runner through tsx.
// Node 20's --test takes paths, not globs, so the files are listed here.
// Usage: node scripts/run-tests.mjs [substring-filter...]
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

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

const filters = process.argv.slice(2)
const files = find(join(root, 'test')).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
if (files.length === 0) {
  console.error('no test files matched')
  process.exit(1)
}
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=600000', ...files], {
  cwd: root,
  stdio: 'inherit',
})
process.exit(result.status ?? 1)
