/**
 * Runs a bundle of dist/bundle/ (scripts/bundle.mjs makes them) with the V8 code
 * cache made for it at build time, `<bundle>.cache`: V8 then reads compiled code
 * instead of parsing and compiling the bundle's 2 MB at every start. V8 refuses a
 * cache made by another V8 version or with other V8 flags (the bundle then compiles
 * as without one), which is why the cache is made with the flags bin/narthex.js runs
 * node with, and why the flags narthex sets in itself ({@link V8_FLAGS}) are set
 * here, before a bundle compiles: scripts/code-cache.mjs makes the cache through
 * this loader too.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import Module, { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { constants, Script } from 'node:vm'

/**
 * V8 flags every narthex process sets in itself before its bundle runs.
 *
 * `--liftoff-only`: undici's HTTP parser is WebAssembly. V8 compiles it with its baseline
 * compiler (Liftoff), and after the first response it compiles the parser's main function
 * (33 KB of code) again with TurboFan, in the background: 150-230 ms of CPU and a
 * transient 30 MiB in every process (the core and each cluster worker), while the first
 * clients are served. The optimised parser gains nothing measurable: the parser's share of
 * an upstream response is small next to the rest of its handling (bench/RESULTS.md). Set at
 * run time rather than on node's command line, so every way of starting narthex has it.
 */
export const V8_FLAGS: readonly string[] = ['--liftoff-only']

export interface LoadedBundle {
  /** What the bundle exports. */
  readonly exports: Record<string, unknown>
  /** True when V8 refused the code cache; undefined when there was none (or it was not used). */
  readonly cacheRejected: boolean | undefined
  /** Writes the code cache for this bundle, with what has been compiled so far. */
  writeCache(): void
}

/** Loads and runs the CommonJS bundle `file`, with its code cache unless `useCache` is false. */
export function loadBundle(file: string, options: { useCache?: boolean } = {}): LoadedBundle {
  // Set again by a second bundle (a flag set to the value it has changes nothing).
  for (const flag of V8_FLAGS) setFlagsFromString(flag)
  const cacheFile = `${file}.cache`
  let cachedData: Buffer | undefined
  if (options.useCache !== false) {
    try {
      cachedData = readFileSync(cacheFile)
    } catch {
      cachedData = undefined
    }
  }
  // The bundles are ASCII (scripts/bundle.mjs checks): read as Latin-1, the bytes become the
  // string as they are, without UTF-8 decoding.
  const script = new Script(Module.wrap(readFileSync(file, 'latin1')), {
    filename: file,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  })
  const module = { exports: {} as Record<string, unknown> }
  const run = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: unknown, filename: string, dirname: string) => void
  run.call(module.exports, module.exports, createRequire(file), module, file, dirname(file))
  return {
    exports: module.exports,
    cacheRejected: cachedData === undefined ? undefined : script.cachedDataRejected,
    writeCache: () => writeFileSync(cacheFile, script.createCachedData()),
  }
}
