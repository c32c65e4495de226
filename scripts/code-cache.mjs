#!/usr/bin/env node
/**
 * Makes V8's code cache (`<bundle>.cache`) of each bundle named: loads it without a
 * cache, which runs its modules' top-level code (nothing is started: no command runs),
 * evaluates the modules it loads at first use (its `loadLazyModules`), and writes what
 * V8 compiled. scripts/bundle.mjs runs it with the flags narthex runs
 * with, since V8 accepts a cache only under the flags it was made with.
 *
 * Usage: node --max-semi-space-size=2 scripts/code-cache.mjs dist/bundle/main.cjs …
 */
import { loadBundle } from '../dist/cli/bundle-loader.js'

for (const file of process.argv.slice(2)) {
  const bundle = loadBundle(file, { useCache: false })
  // The modules narthex loads at first use are evaluated too, so the cache holds their code.
  await bundle.exports.loadLazyModules?.()
  bundle.writeCache()
}
// A bundle's top-level code may leave handles open (a logger's stream, a metrics timer).
process.exit(0)
