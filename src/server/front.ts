/**
 * The worker front: an HTTP server run in each worker process when narthex
 * spreads its hot path over several cores. It answers what needs no index and
 * no decision by itself: narinfos it has already seen (an in-memory LRU) and
 * NAR files already committed to the store (a file under `nar/` exists only
 * once it was verified, fsynced and renamed into place). Everything else goes
 * to the core process, the single owner of LevelDB, the downloads and the
 * policy, over a keep-alive connection pool.
 */
import { stat } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { boundedLru } from '../lru.js'
import { loadPool } from '../undici.js'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { MAX_NARINFO_BYTES, narShardPath, narUrl, parseNarInfo } from '../protocol/index.js'
import { sendRefusal, type AccessControl } from './access.js'
import { HttpMetrics, narInfoHitCounter, observeRequest, setRequestToken, type RequestContext, type RequestLogLevel } from './http-metrics.js'
import { NAR_ROUTE, NARINFO_ROUTE, requestPath, sendFile, SUSPICIOUS_PATH } from './http-util.js'
import { respondStatus } from './respond-error.js'

/** What a worker front needs. */
export interface FrontDeps {
  /** The core's internal URL, `http://127.0.0.1:PORT`. */
  readonly coreUrl: string
  /** The store's `nar/` directory. */
  readonly narDir: string
  readonly lruEntries: number
  /** How long a narinfo is answered from the worker's memory before asking the core again. */
  readonly lruTtlMs: number
  readonly log: Logger
  /** Who may read: checked here too, since hits never reach the core. */
  readonly access?: AccessControl | undefined
  /** Told of every stored NAR the worker served, so the core can keep its use times. */
  readonly onServedFile?: (fileName: string) => void
  /** Where the requests this worker answers itself are counted (the core counts those it passes on). */
  readonly registry?: Registry | undefined
  /** One log line per request answered here, at this level (config `log.requests`). */
  readonly requestLog?: RequestLogLevel | undefined
}

// Hop-by-hop headers are not forwarded (RFC 9110 section 7.6.1). Nor is Expect:
// node already answered the client's 100-continue, and undici refuses the header.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer', 'expect'])

function forwardable(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k.toLowerCase())) out[k] = v
  return out
}

/** True when `narinfo` (a narinfo the core served for `hashPart`) gives the NAR URL of `fileName`. */
function servesFile(narinfo: Buffer | undefined, hashPart: string, fileName: string): boolean {
  if (narinfo === undefined) return false
  try {
    return parseNarInfo(narinfo.toString('utf8')).url === narUrl(fileName, hashPart)
  } catch {
    return false
  }
}

/** A narinfo body from the core, whole (narinfos are small; a larger body is an error). */
async function readCapped(body: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of body) {
    size += (c as Buffer).length
    if (size > MAX_NARINFO_BYTES) throw new Error('narinfo from the core is too large')
    chunks.push(c as Buffer)
  }
  return Buffer.concat(chunks)
}

function sendNarInfo(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  res.writeHead(200, ['content-type', 'text/x-nix-narinfo', 'content-length', String(body.length)])
  res.end(req.method === 'HEAD' ? undefined : body)
}

/** Creates a worker's front server (not yet listening), the pool it closes with, and a warm-up to run before listening. */
export async function createFrontServer(deps: FrontDeps): Promise<{ server: Server; close: () => Promise<void>; warmUp: () => Promise<void> }> {
  const Pool = await loadPool()
  const core = new Pool(deps.coreUrl, { connections: 64, headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 60_000 })
  // Kept encoded: a hit is answered with one write of a ready buffer.
  const narinfos = boundedLru<string, Buffer>(deps.lruEntries, { ttl: deps.lruTtlMs })

  const observe = deps.registry && { metrics: new HttpMetrics(deps.registry), log: deps.log, requestLog: deps.requestLog ?? 'off' }

  async function proxy(req: IncomingMessage, res: ServerResponse, ctx: RequestContext | undefined, onText?: (text: Buffer) => void): Promise<void> {
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
    const upstream = await core.request({
      path: req.url ?? '/',
      // A narinfo is always fetched whole, so that a HEAD fills the cache with the text too.
      method: (onText ? 'GET' : (req.method ?? 'GET')),
      headers: forwardable(req.headers),
      ...(hasBody ? { body: req } : {}),
    })
    // The core answered: it counted and logged the request.
    if (ctx) ctx.passedOn = true
    if (onText && upstream.statusCode === 200) {
      const text = await readCapped(upstream.body)
      onText(text)
      sendNarInfo(req, res, text)
      return
    }
    res.writeHead(upstream.statusCode, forwardable(upstream.headers))
    try {
      await pipeline(upstream.body, res)
    } catch {
      // The core cut the stream (a NAR failed verification) or the client left: cut ours too.
      res.destroy()
    }
  }

  /**
   * The narinfo the core serves for `hashPart`, from this worker's memory or
   * asked of the core (and kept): a NAR URL under a hash part is answered here
   * only when that narinfo names the file. Undefined when the core has none.
   * A client fetching a NAR through another worker than its narinfo (each
   * connection goes to any worker) so gets the file from this worker's disk,
   * not streamed through the core. The core counts that look-up as a narinfo
   * request.
   */
  async function knownNarInfo(req: IncomingMessage, hashPart: string): Promise<Buffer | undefined> {
    const hot = narinfos.get(hashPart)
    if (hot !== undefined) return hot
    // With private reading the core checks the client's token too.
    const { authorization } = req.headers
    const answer = await core.request({ path: `/${hashPart}.narinfo`, method: 'GET', headers: authorization ? { authorization } : {} })
    if (answer.statusCode !== 200) {
      await answer.body.dump()
      return undefined
    }
    const text = await readCapped(answer.body)
    narinfos.set(hashPart, text)
    return text
  }

  async function handle(req: IncomingMessage, res: ServerResponse, ctx: RequestContext | undefined): Promise<void> {
    const admitted = deps.access?.gate(req)
    if (admitted && !admitted.ok) return sendRefusal(res, admitted.refusal)
    // The request log names the token (never its secret).
    if (admitted?.token) setRequestToken(req, admitted.token.name)
    const path = requestPath(req)
    // `*` or an authority cannot be passed on (undici wants a path); the core would answer 400.
    if (!path.startsWith('/') && !/^https?:\/\//i.test(path)) {
      respondStatus(res, 400, 'bad request path')
      return
    }
    const getOrHead = req.method === 'GET' || req.method === 'HEAD'
    if (getOrHead && !SUSPICIOUS_PATH.test(path)) {
      let m = NARINFO_ROUTE.exec(path)
      if (m) {
        const hashPart = m[1]
        if (ctx) ctx.route = 'narinfo'
        const hot = narinfos.get(hashPart)
        if (hot !== undefined) {
          if (ctx) ctx.outcome = 'hit'
          sendNarInfo(req, res, hot)
          return
        }
        await proxy(req, res, ctx, (text) => narinfos.set(hashPart, text))
        return
      }
      m = NAR_ROUTE.exec(path)
      if (m) {
        const [, hashPart, name] = m
        if (ctx) ctx.route = 'nar'
        // A hash part is answered here only when it is known to name this file; else the core decides.
        const file = hashPart === undefined || servesFile(await knownNarInfo(req, hashPart), hashPart, name) ? join(deps.narDir, narShardPath(name)) : undefined
        const st = file === undefined ? undefined : await stat(file).catch(() => undefined)
        if (file !== undefined && st?.isFile()) {
          deps.onServedFile?.(name)
          if (ctx) ctx.outcome = 'hit'
          const sent = await sendFile(req, res, file, st.size)
          if (ctx) ctx.bytes = sent
          return
        }
      }
    }
    await proxy(req, res, ctx)
  }

  const countHit = observe && narInfoHitCounter(observe.metrics)
  /** A narinfo in this worker's memory, answered without a promise or a listener (the hot path); false: {@link handle} it. */
  function answerHotNarInfo(req: IncomingMessage, res: ServerResponse): boolean {
    const started = performance.now()
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    // The route's pattern admits no query, dot-dot or escape.
    const m = NARINFO_ROUTE.exec(req.url ?? '')
    if (!m) return false
    const admitted = deps.access?.gate(req)
    if (admitted && !admitted.ok) return false
    const hot = narinfos.get(m[1])
    if (hot === undefined) return false
    sendNarInfo(req, res, hot)
    countHit?.((performance.now() - started) / 1000)
    return true
  }

  const server = createServer({ requestTimeout: 60_000, headersTimeout: 30_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    if ((observe === undefined || observe.requestLog === 'off') && answerHotNarInfo(req, res)) return
    const ctx = observe && observeRequest(req, res, observe)
    handle(req, res, ctx)
      .catch((err) => {
        deps.log.warn({ err: (err as Error).message, url: req.url }, 'worker could not answer')
        respondStatus(res, 503, undefined, { 'retry-after': '5' })
      })
      .finally(() => ctx?.handled())
  })
  server.keepAliveTimeout = 65_000
  // One request to the core ahead of the first client's: the pool's connection and the code that reads an answer.
  const warmUp = async () => {
    await readCapped((await core.request({ path: '/nix-cache-info', method: 'GET' })).body)
  }
  return { server, close: () => core.close(), warmUp }
}
