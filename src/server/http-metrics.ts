/**
 * What clients were answered: request counters and the request log, shared by
 * the core server and the worker fronts. Each process counts the requests it
 * answered itself (a worker does not count what it passed to the core, which
 * counts it), so the sums over all processes count every request once.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { Counter, Histogram, type Registry } from 'prom-client'

/** Route names, for metrics (bounded label values). */
export type Route = 'cache-info' | 'narinfo' | 'nar' | 'log' | 'realisation' | 'listing' | 'push' | 'status' | 'healthz' | 'metrics' | 'audit-checkpoint' | 'other'

/**
 * What the cache did for a narinfo or NAR request: `hit` answered from what
 * narthex holds, `miss` fetched from an upstream for it, `absent` (404, refusals
 * included), `unavailable` (503), `found` a narinfo whose source is not known.
 */
export type CacheOutcome = 'hit' | 'miss' | 'found' | 'absent' | 'unavailable'

/** How much the request log says: nothing, or one line per request at this level. */
export type RequestLogLevel = 'off' | 'info' | 'debug'

/** The HTTP metrics, registered on a given registry. */
export class HttpMetrics {
  readonly requests: Counter<'route' | 'status'>
  readonly duration: Histogram<'route'>
  readonly cacheRequests: Counter<'kind' | 'outcome'>
  readonly narBytesServed: Counter<'outcome'>

  constructor(registry: Registry) {
    this.requests = new Counter({
      name: 'narthex_http_requests_total',
      help: 'HTTP requests answered, by route and status',
      labelNames: ['route', 'status'],
      registers: [registry],
    })
    this.duration = new Histogram({
      name: 'narthex_http_request_duration_seconds',
      help: 'Time from a request to the end of its response, by route',
      labelNames: ['route'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    })
    this.cacheRequests = new Counter({
      name: 'narthex_cache_requests_total',
      help: 'narinfo and NAR requests by kind and outcome (hit, miss, absent, unavailable)',
      labelNames: ['kind', 'outcome'],
      registers: [registry],
    })
    this.narBytesServed = new Counter({
      name: 'narthex_nar_bytes_served_total',
      help: 'NAR bytes sent to clients, by outcome (hit: from the store, miss: while downloading)',
      labelNames: ['outcome'],
      registers: [registry],
    })
  }
}

/**
 * Counts a narinfo answered from memory at once (the hot path of a warm
 * cache): the same series {@link observeRequest} would count, through label
 * children looked up once, and no request-log line (callers use the full path
 * when the request log is on).
 */
export function narInfoHitCounter(metrics: HttpMetrics): (seconds: number) => void {
  const requests = metrics.requests.labels({ route: 'narinfo', status: '200' })
  const duration = metrics.duration.labels({ route: 'narinfo' })
  const hits = metrics.cacheRequests.labels({ kind: 'narinfo', outcome: 'hit' })
  return (seconds) => {
    requests.inc()
    duration.observe(seconds)
    hits.inc()
  }
}

/** What a handler tells about the request it answers. */
export interface RequestContext {
  route: Route
  outcome: CacheOutcome | undefined
  /** NAR body bytes sent (for `narthex_nar_bytes_served_total`). */
  bytes: number
  /** Set when another process (the core) answered and counts the request. */
  passedOn: boolean
  /** Called by the request's handler when it is done (its byte count is final). */
  handled(): void
}

const tokens = new WeakMap<IncomingMessage, string>()

/**
 * Names the access token a request was authorised with, for the request log
 * (the name only, never the token). Called by access control once it checked one.
 */
export function setRequestToken(req: IncomingMessage, name: string): void {
  tokens.set(req, name)
}

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/
let sequence = 0
const idPrefix = process.pid.toString(36)

/** Options of {@link observeRequest}. */
export interface ObserveOptions {
  readonly metrics: HttpMetrics
  readonly log: Logger
  readonly requestLog: RequestLogLevel
}

/**
 * Starts observing a request: once its response ended (or the connection was
 * cut) and its handler called `handled()`, counts it and writes its request-log
 * line. The handler fills in the returned context.
 */
export function observeRequest(req: IncomingMessage, res: ServerResponse, options: ObserveOptions): RequestContext {
  const started = process.hrtime.bigint()
  const writtenBefore = req.socket.bytesWritten
  let pending = 2
  const done = () => {
    if (--pending === 0) record()
  }
  const ctx: RequestContext = { route: 'other', outcome: undefined, bytes: 0, passedOn: false, handled: done }
  res.once('close', done)
  function record(): void {
    if (ctx.passedOn) return
    const { metrics } = options
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const status = res.headersSent ? res.statusCode : 0
    metrics.requests.inc({ route: ctx.route, status: String(status) })
    metrics.duration.observe({ route: ctx.route }, seconds)
    if (ctx.outcome && (ctx.route === 'narinfo' || ctx.route === 'nar')) {
      metrics.cacheRequests.inc({ kind: ctx.route, outcome: ctx.outcome })
      if (ctx.route === 'nar' && ctx.bytes > 0) metrics.narBytesServed.inc({ outcome: ctx.outcome }, ctx.bytes)
    }
    if (options.requestLog === 'off') return
    const given = req.headers['x-request-id']
    const target = (req.url ?? '').split('?')[0]
    const line: Record<string, unknown> = {
      req: typeof given === 'string' && ID_PATTERN.test(given) ? given : `${idPrefix}-${(++sequence).toString(36)}`,
      method: req.method,
      // Never the query string nor an absolute-form target (either could carry a credential).
      path: target.startsWith('/') ? target.slice(0, 200) : '-',
      route: ctx.route,
      status,
      // Sent on the connection for this response, headers included.
      bytes: req.socket.bytesWritten - writtenBefore,
      ms: Math.round(seconds * 10_000) / 10,
    }
    if (ctx.outcome) line.outcome = ctx.outcome
    const token = tokens.get(req)
    if (token !== undefined) line.tokenName = token
    if (!res.writableFinished) line.aborted = true
    options.log[options.requestLog](line, 'request')
  }
  return ctx
}
