#!/usr/bin/env node
// Entry point installed as `narthex`: runs the compiled CLI (npm run build produces dist/).
// A cluster worker (config `workers`) loads only the front server, not the whole command line.
import cluster from 'node:cluster'

if (cluster.isWorker && process.env.NARTHEX_WORKER_CORE_URL !== undefined) {
  const { runClusterWorker } = await import('../dist/cli/worker.js')
  await runClusterWorker()
} else {
  const { main } = await import('../dist/cli/main.js')
  process.exitCode = await main(process.argv.slice(2))
}
