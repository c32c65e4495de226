#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/) into three files under dist/bundle/: `main.js`
 * (the command line), `worker.js` (a cluster worker's front server) and
 * `verify-thread.js` (the NAR verification thread, which main.js starts from the file
 * beside it). bin/narthex.js runs them.
 *
 * Why: Node resolves, reads and links each of the ~700 modules of the unbundled tree on
 * its own, which was most of the time from start to first answer (docs/ARCHITECTURE.md,
 * "Start-up"). Packages with native code (LevelDB, lzma, zstd) stay in node_modules, and
 * so do the AWS SDK and pino-pretty, which are loaded only when used.
 *
 * Usage: node scripts/bundle.mjs (run by `npm run build`, after tsc).
 */
import { build } from 'esbuild'
import { rm } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = `${root}dist/bundle`

await rm(outdir, { recursive: true, force: true })
await build({
  absWorkingDir: root,
  entryPoints: {
    main: 'dist/cli/main.js',
    worker: 'dist/cli/worker.js',
    'verify-thread': 'dist/store/verify-thread.js',
  },
  outdir,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Native addons find their binaries relative to their own package; the others are loaded lazily.
  external: ['classic-level', 'lzma-native', 'zstd-napi', '@aws-sdk/*', 'pino-pretty'],
  // The CommonJS packages inside (undici, pino, yargs' helpers) call require() for node's own modules.
  banner: { js: "import { createRequire as __narthexCreateRequire } from 'node:module';\nconst require = __narthexCreateRequire(import.meta.url);" },
  // Smaller is faster to load and keeps less source in memory (5% and 4-5 MiB here). Names are kept for
  // stack traces, and the source maps lead back to src/ with `node --enable-source-maps`.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  sourcemap: 'linked',
  sourcesContent: false,
  legalComments: 'none',
  logLevel: 'warning',
})
