/**
 * The layering of docs/DESIGN.md, enforced: each src/ folder may import only the
 * layers below it, and only through their index.ts. Top-level files are leaves
 * every layer may use (they import nothing of narthex but errors.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

const ALLOWED: Record<string, string[]> = {
  protocol: [],
  config: ['protocol'],
  store: ['protocol'],
  upstream: ['protocol'],
  policy: ['protocol'],
  cache: ['protocol', 'store', 'upstream', 'policy'],
  server: ['protocol', 'cache'],
  cli: ['protocol', 'config', 'store', 'upstream', 'policy', 'cache', 'server'],
}

/** Top-level leaves shared by every layer. */
const SHARED = ['errors.js', 'file-copy.js', 'secret-file.js', 's3-client.js', 'lru.js', 'undici.js']

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : []
  })
}

test('src layers import only the layers below them, through index.ts', () => {
  const problems: string[] = []
  for (const file of files(SRC)) {
    const rel = relative(SRC, file)
    const layer = rel.includes('/') ? rel.split('/')[0] : '(top)'
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)) {
      const target = relative(SRC, join(file, '..', m[1]))
      const targetLayer = target.includes('/') ? target.split('/')[0] : '(top)'
      if (targetLayer === layer || SHARED.includes(target)) continue
      if (layer === '(top)') {
        if (target !== 'errors.js' && target !== 'protocol/index.js') problems.push(`${rel} imports ${target}: top-level files import nothing but errors.ts and the pure protocol layer`)
        continue
      }
      if (!ALLOWED[layer]?.includes(targetLayer)) problems.push(`${rel} imports ${target}: ${layer} may not depend on ${targetLayer}`)
      else if (!target.endsWith('/index.js')) problems.push(`${rel} imports ${target}: go through ${targetLayer}/index.ts`)
    }
  }
  assert.deepEqual(problems, [])
})
