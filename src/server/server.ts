/**
 * The HTTP front: node:http, a fixed set of routes matched against the raw
 * request path (never decoded, never joined onto a file system path), and the
 * answers of docs/DESIGN.md's table.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Cache, Metrics, NarAnswer, PushReceiver } from '../cache/index.js'
import { NarthexError } from '../errors.js'
import { formatCacheInfo, MAX_NARINFO_BYTES, MAX_REALISATION_BYTES, STORE_DIR } from '../protocol/index.js'
import { sendRefusal, type AccessControl, type ClientToken } from './access.js'
import {
  LISTING_ROUTE,
  LOG_ROUTE,
  NAR_ROUTE,
  NARINFO_ROUTE,
  REALISATION_ROUTE,
  requestPath,
  sendFile,
  sendFollower,
  sendStream,
  SUSPICIOUS_PATH,
} from './http-util.js'
import { HttpMetrics, narInfoHitCounter, observeRequest, setRequestToken, type RequestContext, type RequestLogLevel, type Route } from './http-metrics.js'
import { respondError, respondStatus } from './respond-error.js'
import { StatusProvider, type MetricsSnapshot, type StatusSources } from './status-data.js'
import { renderStatusPage, viewOf } from './status-page.js'

/** What the server needs. */
export interface ServerDeps {
  readonly cache: Cache
  readonly metrics: Metrics
  readonly log: Logger
  readonly priority: number
  /** narthex's public key, shown on the status page. */
  readonly publicKey: string
  /** Every signing key's public key (key rotation), shown on the status page; default: `publicKey` alone. */
  readonly publicKeys?: readonly string[] | undefined
  /** Accepting `nix copy --to` pushes (tokens with the push scope are in `access`). */
  readonly push?: { readonly receiver: PushReceiver } | undefined
  /** Who may read and push. */
  readonly access: AccessControl
  /** One log line per request at this level (config `log.requests`); default off. */
  readonly requestLog?: RequestLogLevel | undefined
  /** What the status page shows besides the metrics; without it, only the public key and upstreams. */
  readonly status?: StatusSources | undefined
  /** The metrics of the worker processes, to sum with the core's (config `workers`). */
  readonly gatherWorkers?: (() => Promise<MetricsSnapshot[]>) | undefined
  /** The latest signed checkpoint of the audit log, served at `/audit/checkpoint`. */
  readonly auditCheckpoint?: (() => string | undefined) | undefined
}

/** Creates the HTTP server (not yet listening). */
export function createNarthexServer(deps: ServerDeps): Server {
  const cacheInfo = formatCacheInfo({ storeDir: STORE_DIR, wantMassQuery: true, priority: deps.priority })
  const http = new HttpMetrics(deps.metrics.registry)
  const observe = { metrics: http, log: deps.log, requestLog: deps.requestLog ?? 'off' } as const
  const countHit = narInfoHitCounter(http)
  const server = createServer({ requestTimeout: 60_000, headersTimeout: 30_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    if (observe.requestLog === 'off' && answerHotNarInfo(req, res)) return
    const ctx = observeRequest(req, res, observe)
    handle(
      req,
      res,
      (r) => {
        ctx.route = r
      },
      ctx,
    )
      .catch((err) => respondError(res, err, deps.log))
      .finally(() => ctx.handled())
  })
  server.keepAliveTimeout = 65_000

  const statusProvider = new StatusProvider(deps)
  server.once('close', () => statusProvider.close())

  /**
   * A narinfo served lately, answered without a promise or a listener: the
   * warm cache's hot path. False when the request needs {@link handle}
   * (another route, a refusal, a narinfo not in memory).
   */
  function answerHotNarInfo(req: IncomingMessage, res: ServerResponse): boolean {
    const started = performance.now()
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    // The route's pattern admits no query, dot-dot or escape: nothing SUSPICIOUS_PATH would refuse.
    const m = NARINFO_ROUTE.exec(req.url ?? '')
    if (!m) return false
    const admitted = deps.access.gate(req)
    if (!admitted.ok) return false
    const text = deps.cache.hotNarInfo(m[1])
    if (text === undefined) return false
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': Buffer.byteLength(text) })
    res.end(req.method === 'HEAD' ? undefined : text)
    countHit((performance.now() - started) / 1000)
    return true
  }

  async function handle(req: IncomingMessage, res: ServerResponse, setRoute: (r: Route) => void, ctx: RequestContext): Promise<void> {
    const path = requestPath(req)
    const method = req.method ?? 'GET'
    const admitted = deps.access.gate(req)
    if (!admitted.ok) return sendRefusal(res, admitted.refusal)
    // The request log names the token (never its secret).
    if (admitted.token) setRequestToken(req, admitted.token.name)
    if (SUSPICIOUS_PATH.test(path) || !path.startsWith('/')) {
      respondStatus(res, 400, 'bad request path')
      return
    }
    if (method === 'PUT' && deps.push) {
      setRoute('push')
      await handlePut(req, res, path, deps.push)
      return
    }
    if (method !== 'GET' && method !== 'HEAD') {
      // The body (if any) is not read: close the connection rather than drain it.
      res.shouldKeepAlive = false
      respondStatus(res, 405, `${method} is not allowed here`, { allow: deps.push ? 'GET, HEAD, PUT' : 'GET, HEAD' })
      return
    }
    let m: RegExpExecArray | null
    if ((m = NARINFO_ROUTE.exec(path))) {
      setRoute('narinfo')
      const answer = await deps.cache.getNarInfo(m[1])
      ctx.outcome = answer.kind === 'found' ? (answer.outcome === 'admitted' ? 'miss' : answer.outcome ?? 'found') : answer.kind
      if (answer.kind === 'found') {
        res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': Buffer.byteLength(answer.text) })
        res.end(method === 'HEAD' ? undefined : answer.text)
      } else if (answer.kind === 'absent') respondStatus(res, 404)
      else respondStatus(res, 503, undefined, { 'retry-after': String(answer.retryAfterS) })
      return
    }
    if ((m = NAR_ROUTE.exec(path))) {
      setRoute('nar')
      await serveNar(req, res, await deps.cache.getNar(m[2], m[1]), ctx)
      return
    }
    if ((m = LOG_ROUTE.exec(path))) {
      setRoute('log')
      const answer = await deps.cache.getLog(m[1])
      if (answer.kind === 'absent') respondStatus(res, 404)
      else if (answer.kind === 'unavailable') respondStatus(res, 503, undefined, { 'retry-after': String(answer.retryAfterS) })
      else if (answer.kind === 'streaming') {
        res.writeHead(200, {
          'content-type': 'text/plain; charset=utf-8',
          ...(answer.size !== undefined ? { 'content-length': answer.size } : {}),
          ...(answer.encoding !== undefined ? { 'content-encoding': answer.encoding } : {}),
        })
        if (method === 'HEAD') {
          answer.stream.on('error', () => undefined).destroy()
          res.end()
        } else await sendStream(answer.stream, res)
      }
      return
    }
    if ((m = REALISATION_ROUTE.exec(path))) {
      setRoute('realisation')
      const answer = await deps.cache.getRealisation(m[1])
      if (answer.kind === 'found') sendJson(res, method, answer.text)
      else if (answer.kind === 'absent') respondStatus(res, 404)
      else respondStatus(res, 503, undefined, { 'retry-after': String(answer.retryAfterS) })
      return
    }
    if ((m = LISTING_ROUTE.exec(path))) {
      setRoute('listing')
      const answer = await deps.cache.getListing(m[1])
      if (answer.kind === 'found') sendJson(res, method, answer.text)
      else if (answer.kind === 'absent') respondStatus(res, 404)
      else respondStatus(res, 413, 'the listing of this path is larger than narthex writes')
      return
    }
    switch (path) {
      case '/nix-cache-info':
        setRoute('cache-info')
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(cacheInfo) })
        res.end(method === 'HEAD' ? undefined : cacheInfo)
        return
      case '/audit/checkpoint': {
        setRoute('audit-checkpoint')
        const checkpoint = deps.auditCheckpoint?.()
        if (checkpoint === undefined) return respondStatus(res, 404, 'no audit checkpoint yet')
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(checkpoint), 'cache-control': 'no-store' })
        res.end(method === 'HEAD' ? undefined : checkpoint)
        return
      }
      case '/healthz':
        setRoute('healthz')
        respondStatus(res, 200, 'ok')
        return
      case '/metrics': {
        setRoute('metrics')
        for (const u of deps.cache.upstreams) deps.metrics.upstreamUp.set({ upstream: u.name }, u.isDown ? 0 : 1)
        const registry = await statusProvider.allMetrics()
        const body = await registry.metrics()
        res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) })
        res.end(method === 'HEAD' ? undefined : body)
        return
      }
      case '/': {
        setRoute('status')
        const html = renderStatusPage(await statusProvider.status(req))
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'cache-control': 'no-store' })
        res.end(method === 'HEAD' ? undefined : html)
        return
      }
      case '/status.json': {
        setRoute('status')
        const data = await statusProvider.status(req)
        const json = JSON.stringify({ ...data, view: viewOf(data) })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), 'cache-control': 'no-store' })
        res.end(method === 'HEAD' ? undefined : json)
        return
      }
    }
    respondStatus(res, 404)
  }

  async function handlePut(req: IncomingMessage, res: ServerResponse, path: string, push: NonNullable<ServerDeps['push']>): Promise<void> {
    const allowed = deps.access.authorizePush(req)
    if (!allowed.ok) {
      if (allowed.refusal.status === 403) deps.log.info({ tokenName: allowed.refusal.token, url: req.url }, 'push refused: the token lacks the push scope')
      return sendRefusal(res, allowed.refusal)
    }
    const token: ClientToken = allowed.token
    setRequestToken(req, token.name)
    let m: RegExpExecArray | null
    if ((m = NARINFO_ROUTE.exec(path))) {
      const text = await readBody(req, MAX_NARINFO_BYTES)
      const outcome = await push.receiver.receiveNarInfo(m[1], text, 'push', token)
      respondStatus(res, outcome === 'admitted' ? 201 : 200, outcome)
      return
    }
    // Nix uploads to the URL of its own narinfo, which has no hash part.
    if ((m = NAR_ROUTE.exec(path)) && m[1] === undefined) {
      await push.receiver.receiveNar(m[2], req)
      respondStatus(res, 201, 'stored')
      return
    }
    if ((m = REALISATION_ROUTE.exec(path))) {
      const text = await readBody(req, MAX_REALISATION_BYTES)
      const outcome = await push.receiver.receiveRealisation(m[1], text)
      respondStatus(res, outcome === 'admitted' ? 201 : 200, outcome)
      return
    }
    if (LISTING_ROUTE.test(path)) {
      await push.receiver.receiveListing(req)
      respondStatus(res, 200, 'accepted; narthex serves listings it writes from the NARs it verified')
      return
    }
    if ((m = LOG_ROUTE.exec(path))) {
      await push.receiver.receiveLog(m[1], req, req.headers['content-encoding'])
      respondStatus(res, 201, 'stored')
      return
    }
    res.shouldKeepAlive = false
    respondStatus(res, 405, 'narthex accepts pushes of NARs, narinfos, realisations, listings and build logs only', { allow: 'GET, HEAD' })
  }

  async function serveNar(req: IncomingMessage, res: ServerResponse, answer: NarAnswer, ctx: RequestContext): Promise<void> {
    const head = req.method === 'HEAD'
    ctx.outcome = answer.kind === 'stored' ? 'hit' : answer.kind === 'following' ? 'miss' : answer.kind
    if (answer.kind === 'absent') return respondStatus(res, 404)
    if (answer.kind === 'unavailable') return respondStatus(res, 503, undefined, { 'retry-after': String(answer.retryAfterS) })
    const headers: Record<string, string | number> = { 'content-type': 'application/x-nix-nar' }
    if (answer.kind === 'following') {
      // Still downloading: no ranges; the last byte waits for verification.
      if (answer.size !== undefined) headers['content-length'] = answer.size
      res.writeHead(200, headers)
      // Headers go out at once: the client sees the answer start while the bytes are still coming.
      res.flushHeaders()
      if (head) {
        answer.follower.close()
        res.end()
        return
      }
      ctx.bytes = await sendFollower(answer.follower, res)
      return
    }
    ctx.bytes = await sendFile(req, res, answer.path, answer.size)
  }

  return server
}

/** Sends a small JSON document (a realisation, a listing). */
function sendJson(res: ServerResponse, method: string, text: string): void {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(method === 'HEAD' ? undefined : text)
}

/** Reads a small request body (a narinfo), refusing more than `maxBytes`. */
async function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > maxBytes) throw new NarthexError('PAYLOAD_TOO_LARGE', `body larger than ${maxBytes} bytes`)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}
