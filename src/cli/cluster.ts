/**
 * Several cores for the hot path (config `workers: N`). The primary process is
 * the core: it owns LevelDB, the downloads, the policy and the audit log, and
 * serves them on an internal 127.0.0.1 port. N worker processes share the
 * public port (node:cluster) and answer hot narinfos and stored NARs
 * themselves; everything else they pass to the core (src/server/front.ts).
 */
import cluster, { type Worker } from 'node:cluster'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { Config } from '../config/index.js'
import type { MetricsSnapshot } from '../server/index.js'
import { startNarthex, type Narthex } from './app.js'
import { resolveLogFormat } from './log.js'
import { ACCESS_ENV, accessForWorkers, METRICS_MESSAGE, ROLE_ENV } from './worker.js'

// How long a worker may take to finish its requests after SIGTERM before it is killed.
const WORKER_STOP_MS = 15_000
// How long a scrape waits for a worker's metrics; a worker that does not answer is left out of the sums.
const METRICS_WAIT_MS = 2_000

/**
 * Asks every live worker for its metrics over the cluster IPC channel (the
 * core sums them with its own, prom-client's AggregatorRegistry.aggregate).
 */
function workerMetricsGatherer(): { gather: () => Promise<MetricsSnapshot[]>; answer: (msg: { id?: number; metrics?: MetricsSnapshot }) => void } {
  let next = 0
  const waiting = new Map<number, (metrics: MetricsSnapshot | undefined) => void>()
  const ask = (worker: Worker) =>
    new Promise<MetricsSnapshot | undefined>((resolve) => {
      const id = next++
      const timer = setTimeout(() => {
        waiting.delete(id)
        resolve(undefined)
      }, METRICS_WAIT_MS)
      waiting.set(id, (metrics) => {
        clearTimeout(timer)
        waiting.delete(id)
        resolve(metrics)
      })
      try {
        worker.send({ type: METRICS_MESSAGE, id })
      } catch {
        waiting.get(id)?.(undefined)
      }
    })
  return {
    async gather() {
      const live = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected())
      return (await Promise.all(live.map(ask))).filter((m): m is MetricsSnapshot => m !== undefined)
    },
    answer(msg) {
      if (msg.id !== undefined) waiting.get(msg.id)?.(msg.metrics)
    },
  }
}

/** A running cluster, from the primary's side. */
export interface ClusterHandle {
  readonly url: string
  /** Reloads the credentials in the core and in every worker (SIGHUP). */
  reloadCredentials(): void
  close(): Promise<void>
}

/**
 * Starts the core on an internal port and `config.workers` workers on the public
 * address; resolves once every worker listens. Dead workers are replaced.
 *
 * The workers are forked first: a worker's node and bundle load while the core
 * opens its store, on the other cores, and each worker asks for the core's URL
 * (`{ wantsCore }`, answered `{ coreUrl }` once the core listens) only when it
 * needs it.
 */
export async function startCluster(config: Config, log: Logger): Promise<ClusterHandle> {
  const metrics = workerMetricsGatherer()
  let core: Narthex | undefined
  let coreStarted!: (url: string) => void
  const coreUrl = new Promise<string>((resolve) => (coreStarted = resolve))
  const env = {
    // Empty: the core's URL comes over IPC (see above).
    [ROLE_ENV]: '',
    NARTHEX_WORKER_NAR_DIR: join(config.dataDir, 'nar'),
    NARTHEX_WORKER_LISTEN: config.listen,
    NARTHEX_WORKER_LOG_LEVEL: config.log.level,
    // Resolved here: a worker's stderr is the core's, a terminal or not.
    NARTHEX_WORKER_LOG_FORMAT: resolveLogFormat(config.log.format),
    NARTHEX_WORKER_REQUEST_LOG: config.log.requests,
    NARTHEX_WORKER_LRU: String(config.cache.narinfoLruEntries),
    // Paths of the token files, never the tokens: each worker reads them itself.
    [ACCESS_ENV]: accessForWorkers(config),
  }
  let stopping = false
  let publicUrl: string
  const fork = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const worker: Worker = cluster.fork(env)
      worker.on('message', (msg: { type?: string; id?: number; metrics?: MetricsSnapshot; listening?: string; error?: string; touched?: string[]; wantsCore?: boolean }) => {
        if (msg.type === METRICS_MESSAGE) metrics.answer(msg)
        else if (msg.touched) for (const name of msg.touched) core?.store.touch(name)
        else if (msg.wantsCore) void coreUrl.then((url) => worker.isConnected() && worker.send({ coreUrl: url }))
        else if (msg.listening) resolve(msg.listening)
        else reject(new Error(msg.error ?? 'worker failed to start'))
      })
      worker.once('exit', (code, signal) => {
        reject(new Error(`worker exited with ${code ?? signal} before listening`))
        if (!stopping) {
          log.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another')
          setTimeout(() => {
            // The signal that stopped this worker may be on its way to the primary too.
            if (!stopping) void fork().catch((err) => log.error({ err: (err as Error).message }, 'cannot restart a worker'))
          }, 500).unref()
        }
      })
    })
  const listening = Array.from({ length: config.workers }, fork)
  // Settled here, so that a worker failing while the core starts is no unhandled rejection.
  const workersUp = Promise.all(listening)
  workersUp.catch(() => undefined)
  try {
    core = await startNarthex({ ...config, listen: '127.0.0.1:0' }, log, { announce: false, gatherWorkers: metrics.gather })
    coreStarted(core.url)
    publicUrl = (await workersUp)[0]!
  } catch (err) {
    stopping = true
    for (const w of Object.values(cluster.workers ?? {})) w?.kill()
    await core?.close()
    throw err
  }
  const started: Narthex = core
  log.info({ url: publicUrl, core: started.url, workers: config.workers, dataDir: config.dataDir, publicKey: started.publicKey }, 'narthex is serving')
  return {
    url: publicUrl,
    reloadCredentials() {
      started.reloadCredentials()
      for (const w of Object.values(cluster.workers ?? {})) if (w && !w.isDead()) w.send({ reloadCredentials: true })
    },
    async close() {
      stopping = true
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              // A signal sent to the whole process group (Ctrl-C, systemd's default KillMode) may
              // have stopped the worker already: its 'exit' came and went.
              if (w.isDead()) return resolve()
              const force = setTimeout(() => w.process.kill('SIGKILL'), WORKER_STOP_MS)
              w.once('exit', () => {
                clearTimeout(force)
                resolve()
              })
              w.process.kill('SIGTERM')
            }),
        ),
      )
      await started.close()
    },
  }
}
