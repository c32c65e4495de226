#!/usr/bin/env -S node --max-semi-space-size=2
// Entry point installed as `narthex`: runs the compiled CLI (npm run build produces dist/).
// --max-semi-space-size=2 (MiB; also in `npm start` and the Dockerfile): a small young generation
// is collected often, and with it the short-lived socket buffers of downloads, whose memory V8
// otherwise gives back only after tens of megabytes (bench/RESULTS.md, scenario 4).
// A cluster worker (config `workers`) loads only the front server, not the whole command line.
// Both come bundled (dist/bundle/, scripts/bundle.mjs): Node loads one file each much faster than
// the ~700 modules they are made of (docs/ARCHITECTURE.md, "Start-up").
import cluster from 'node:cluster'

if (cluster.isWorker && process.env.NARTHEX_WORKER_CORE_URL !== undefined) {
  const { runClusterWorker } = await import('../dist/bundle/worker.js')
  await runClusterWorker()
} else {
  const { main } = await import('../dist/bundle/main.js')
  process.exitCode = await main(process.argv.slice(2))
}
