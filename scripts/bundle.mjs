#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/) into three CommonJS files under dist/bundle/:
 * `main.cjs` (the command line), `worker.cjs` (a cluster worker's front server) and
 * `verify-thread.cjs` (the NAR verification thread, which main.cjs starts from the file
 * beside it). Then it makes V8's code cache of main.cjs and worker.cjs
 * (`<bundle>.cache`), which bin/narthex.js loads them with (src/cli/bundle-loader.ts).
 *
 * Why: Node resolves, reads and links each of the ~700 modules of the unbundled tree on
 * its own, then V8 parses and compiles what runs; that was most of the time from start to
 * first answer (docs/ARCHITECTURE.md, "Start-up"). Packages with native code (LevelDB,
 * lzma, zstd) stay in node_modules, and so do the AWS SDK and pino-pretty, which are loaded
 * only when used.
 *
 * Usage: node scripts/bundle.mjs (run by `npm run build`, after tsc).
 */
import { build } from 'esbuild'
import { spawnSync } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = `${root}dist/bundle`
/** The V8 flags bin/narthex.js runs node with: V8 accepts a code cache only under the flags it was made with. */
const NODE_FLAGS = ['--max-semi-space-size=2']

/**
 * Leaves `./binding` of package `pkg` (the file that loads the package's addon, which it finds
 * from its own directory) in node_modules: the bundle requires it as `<pkg>/binding.js`.
 */
function nativeBinding(pkg) {
  // Matched anywhere: esbuild gives the importer's real path, and node_modules may be a symlink.
  const dir = `${sep}node_modules${sep}${pkg}${sep}`
  return {
    name: `native-binding:${pkg}`,
    setup(b) {
      b.onResolve({ filter: /^\.\/binding(\.js)?$/ }, (args) =>
        args.importer.includes(dir) ? { path: `${pkg}/binding.js`, external: true } : undefined,
      )
    },
  }
}

await rm(outdir, { recursive: true, force: true })
await build({
  absWorkingDir: root,
  entryPoints: {
    main: 'dist/cli/main.js',
    worker: 'dist/cli/worker.js',
    'verify-thread': 'dist/store/verify-thread.js',
  },
  outdir,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // CommonJS has no import.meta: the modules that find files beside them get the bundle's own URL.
  // (import.meta.resolve is used only when narthex runs from its TypeScript sources, under tsx.)
  define: { 'import.meta.url': '__narthexModuleUrl', 'import.meta.resolve': '__narthexNoResolve' },
  banner: {
    js: 'var __narthexModuleUrl = require("node:url").pathToFileURL(__filename).href;\nvar __narthexNoResolve = () => { throw new Error("import.meta.resolve: not in a bundle"); };',
  },
  // import() of the packages left outside becomes require(), which needs no loader hook in a vm.Script.
  supported: { 'dynamic-import': false },
  // Native addons find their binaries relative to their own package; the others are loaded lazily.
  // LevelDB's JavaScript (classic-level, abstract-level and theirs, loaded at every start) is
  // bundled; only the file that finds its addon stays in node_modules (see nativeBinding).
  external: ['lzma-native', 'zstd-napi', '@aws-sdk/*', 'pino-pretty'],
  plugins: [nativeBinding('classic-level')],
  // Smaller is faster to load and keeps less source in memory. Names are kept for stack traces,
  // and the source maps lead back to src/.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  sourcemap: 'linked',
  sourcesContent: false,
  legalComments: 'none',
  logLevel: 'warning',
})

// bundle-loader.ts reads a bundle as Latin-1, which is its text only while it is ASCII (esbuild's
// default charset escapes everything else).
for (const name of ['main.cjs', 'worker.cjs']) {
  const bytes = await readFile(`${outdir}/${name}`)
  const at = bytes.findIndex((b) => b > 0x7f)
  if (at >= 0) throw new Error(`${name}: a byte outside ASCII at offset ${at}`)
}

// The code cache: each bundle evaluated once (its modules' top-level code, nothing started) in a
// node with narthex's flags.
const made = spawnSync(process.execPath, [...NODE_FLAGS, fileURLToPath(new URL('code-cache.mjs', import.meta.url)), `${outdir}/main.cjs`, `${outdir}/worker.cjs`], {
  stdio: 'inherit',
})
if (made.status !== 0) throw new Error(`making the code cache failed (exit ${made.status})`)
