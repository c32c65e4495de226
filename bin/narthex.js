#!/usr/bin/env -S node --max-semi-space-size=2
// Entry point installed as `narthex`: runs the compiled CLI (npm run build produces dist/).
// --max-semi-space-size=2 (MiB; also in `npm start` and the Dockerfile): a small young generation
// is collected often, and with it the short-lived socket buffers of downloads, whose memory V8
// otherwise gives back only after tens of megabytes (bench/RESULTS.md, scenario 4).
// The CLI and the cluster worker (config `workers`, which loads only the front server) come as
// bundles with a code cache made with these flags (dist/bundle/, scripts/bundle.mjs): one file
// each, compiled ahead, loads much faster than the ~700 modules they are made of
// (docs/ARCHITECTURE.md, "Start-up").
import cluster from 'node:cluster'
import { fileURLToPath } from 'node:url'
import { loadBundle } from '../dist/cli/bundle-loader.js'

const bundle = (name) => loadBundle(fileURLToPath(new URL(`../dist/bundle/${name}.cjs`, import.meta.url))).exports

if (cluster.isWorker && process.env.NARTHEX_WORKER_CORE_URL !== undefined) {
  await bundle('worker').runClusterWorker()
} else {
  process.exitCode = await bundle('main').main(process.argv.slice(2))
}
