/**
 * A cluster worker process (config `workers`): the front server on the shared
 * public address (src/server/front.ts). Kept apart from the rest of the command
 * line so that a worker loads only what the front needs (bin/narthex.js starts
 * it directly), not LevelDB, the policy or the config validation.
 */
import cluster from 'node:cluster'
import { collectDefaultMetrics, Registry } from 'prom-client'
import type { Config } from '../config/index.js'
import { AccessControl, createFrontServer, warmHttp, type RequestLogLevel, type TokenSource } from '../server/index.js'
import { loadPool } from '../undici.js'
import { createLogger, splitListen, type LogFormat } from './log.js'

/**
 * The environment variable that makes a process a worker. Its value is the core's
 * URL, or empty when the worker is to ask the primary for it (see cluster.ts).
 */
export const ROLE_ENV = 'NARTHEX_WORKER_CORE_URL'

/** The environment variable that carries the client token files (JSON; empty for public reading). */
export const ACCESS_ENV = 'NARTHEX_WORKER_ACCESS'

/**
 * What a worker needs to check reads itself: with private reading, the token
 * files (names, paths and scopes; the secrets stay in their files). Pushes
 * pass on to the core, which checks them.
 */
export function accessForWorkers(config: Pick<Config, 'access'>): string {
  if (config.access.read !== 'tokens') return ''
  const sources: TokenSource[] = config.access.tokens.map((t) => ({ name: t.name, secretFile: t.secretFile, scopes: t.scopes, pushMatch: t.pushMatch }))
  return JSON.stringify(sources)
}

/** The worker's access check, from {@link ACCESS_ENV}; undefined for public reading. */
function workerAccess(): AccessControl | undefined {
  const text = process.env[ACCESS_ENV]
  return text ? new AccessControl(true, JSON.parse(text) as TokenSource[]) : undefined
}
/**
 * The IPC message type by which the core asks a worker for its metrics and the
 * worker answers (`{ type, id, metrics }`), for the sums of `/metrics`.
 */
export const METRICS_MESSAGE = 'narthex:metrics'

/** True in a worker process forked by the cluster's primary. */
export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[ROLE_ENV] !== undefined
}

/** The core's URL, from the primary, which answers once the core listens. */
function askCoreUrl(): Promise<string> {
  return new Promise((resolve) => {
    const onMessage = (msg: { coreUrl?: string }) => {
      if (typeof msg?.coreUrl !== 'string') return
      process.off('message', onMessage)
      resolve(msg.coreUrl)
    }
    process.on('message', onMessage)
    process.send?.({ wantsCore: true })
  })
}

/** Evaluates undici's Pool, which a worker loads at its first use (for the build's code cache, scripts/code-cache.mjs). */
export async function loadLazyModules(): Promise<void> {
  await loadPool()
}

/** Runs a worker: the front server on the shared public address, until SIGTERM. */
export async function runClusterWorker(): Promise<void> {
  const log = createLogger(process.env.NARTHEX_WORKER_LOG_LEVEL ?? 'info', (process.env.NARTHEX_WORKER_LOG_FORMAT ?? 'json') as LogFormat)
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'narthex_' })
  process.on('message', (msg: { type?: string; id?: number }) => {
    if (msg?.type !== METRICS_MESSAGE) return
    registry
      .getMetricsAsJSON()
      .then((metrics) => process.send?.({ type: METRICS_MESSAGE, id: msg.id, metrics }))
      .catch((err) => log.warn({ err: (err as Error).message }, 'cannot collect the metrics'))
  })
  // Stored NARs served here are reported to the core in batches, for its eviction order.
  const touched = new Set<string>()
  const report = setInterval(() => {
    if (touched.size === 0) return
    process.send?.({ touched: [...touched] })
    touched.clear()
  }, 5_000)
  report.unref()
  const access = workerAccess()
  for (const w of access?.warnings ?? []) log.warn(w)
  const reload = () => {
    try {
      access?.reload()
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot reload the client tokens; keeping the old ones')
    }
  }
  process.on('message', (msg: { reloadCredentials?: boolean }) => {
    if (msg?.reloadCredentials) reload()
  })
  // A SIGHUP sent to the whole process group must not stop the worker (its default).
  process.on('SIGHUP', reload)
  const { server, close, warmUp } = await createFrontServer({
    access,
    coreUrl: process.env[ROLE_ENV] || (await askCoreUrl()),
    narDir: process.env.NARTHEX_WORKER_NAR_DIR!,
    lruEntries: Number(process.env.NARTHEX_WORKER_LRU ?? 50_000),
    lruTtlMs: 60_000,
    log,
    onServedFile: (name) => touched.add(name),
    registry,
    requestLog: (process.env.NARTHEX_WORKER_REQUEST_LOG ?? 'off') as RequestLogLevel,
  })
  await Promise.all([warmUp(), warmHttp()]).catch((err) => log.debug({ err: (err as Error).message }, 'worker warm-up failed'))
  const { host, port } = splitListen(process.env.NARTHEX_WORKER_LISTEN!)
  await new Promise<void>((resolve) => {
    server.once('error', (err) => {
      process.send?.({ error: err.message })
      process.exit(1)
    })
    server.listen(port, host, () => {
      const addr = server.address() as { address: string; port: number; family: string }
      const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
      process.send?.({ listening: `http://${shown}:${addr.port}` })
      resolve()
    })
  })
  await new Promise<void>((resolve) => {
    const stop = () => {
      server.close(() => resolve())
      server.closeIdleConnections()
      setTimeout(() => server.closeAllConnections(), 10_000).unref()
    }
    process.once('SIGTERM', stop)
    // Ctrl-C reaches the whole process group: the primary decides, then sends SIGTERM.
    process.on('SIGINT', () => undefined)
  })
  clearInterval(report)
  if (touched.size > 0) process.send?.({ touched: [...touched] })
  await close()
  log.flush()
  // The IPC channel to the primary would keep this process alive.
  process.disconnect?.()
}
