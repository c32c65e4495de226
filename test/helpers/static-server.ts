/**
 * A fake upstream binary cache for tests: serves a binary-cache directory (as written by
 * `nix copy --to file://DIR`) over HTTP on 127.0.0.1, logs every request, and injects faults.
 *
 * @module
 */
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'
import { resolve, sep } from 'node:path'
import type { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * What to do to one request instead of serving it normally. Body faults (`reset`, `truncate`,
 * `flip`, `wrongLength`, `trickle`) apply to existing files only; a missing file is still a 404.
 */
export type Fault =
  /** Answer with this status (a short text body) and optional extra headers, e.g. Retry-After. */
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  /** Wait `ms` before answering normally. */
  | { kind: 'delayHeaders'; ms: number }
  /** Never answer; the socket stays open until the client gives up or the server closes. */
  | { kind: 'hang' }
  /** Send the headers (full Content-Length) and `afterBytes` body bytes, then a TCP reset. */
  | { kind: 'reset'; afterBytes: number }
  /** Send the full Content-Length but only `bytes` body bytes, then close the socket (FIN). */
  | { kind: 'truncate'; bytes: number }
  /** Serve the file with the byte at `offset` inverted; the length is unchanged. */
  | { kind: 'flip'; offset: number }
  /** Send the whole body under `Content-Length: size + delta`, then close the socket. */
  | { kind: 'wrongLength'; delta: number }
  /** Serve the file at `bytesPerSecond`. */
  | { kind: 'trickle'; bytesPerSecond: number }
  /** Serve `body` (with `status`, default 200) instead of the file, which need not exist. */
  | { kind: 'body'; body: string | Buffer; status?: number }

/** One received request. */
export interface RequestRecord {
  method: string
  /** The request target as sent, query string included. */
  url: string
  /** The Authorization header, if any. */
  authorization?: string
}

/** Credentials a server demands (see {@link StaticServerOptions.auth}). */
export type ServerAuth = { kind: 'basic'; login: string; password: string } | { kind: 'bearer'; token: string }

/** Options of {@link startStaticServer}. */
export interface StaticServerOptions {
  /** Serve every body at this rate (a `trickle` fault overrides it per request). */
  throttleBytesPerSec?: number
  /**
   * Demand these credentials, as a private cache does: any request without them gets 401 with a
   * `WWW-Authenticate` challenge, and one with other credentials gets 403.
   */
  auth?: ServerAuth
}

/** A running server; see {@link startStaticServer}. */
export interface StaticServer {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  readonly url: string
  /** Every request in arrival order; clear it with `requests.length = 0`. */
  readonly requests: RequestRecord[]
  /** Consulted for every request; `undefined` (or no hook) serves normally. */
  fault: ((req: IncomingMessage) => Fault | undefined) | undefined
  /**
   * Requests whose URL starts with `match` (a string) or matches it (a RegExp), optionally only
   * those with `method`.
   */
  count(match: string | RegExp, method?: string): number
  /** Stops listening and destroys every open socket, hanging ones included. */
  close(): Promise<void>
}

/**
 * Serves the files under `dir` on 127.0.0.1 at an ephemeral port: GET and HEAD, 404 for missing
 * files and directories, 405 for other methods, `Content-Length` always, and `Content-Type`
 * `text/x-nix-narinfo` for `.narinfo`. The query string is ignored; paths escaping `dir` are 404.
 */
export async function startStaticServer(dir: string, opts: StaticServerOptions = {}): Promise<StaticServer> {
  const root = resolve(dir)
  const sockets = new Set<Socket>()
  const requests: RequestRecord[] = []

  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', ...(req.headers.authorization !== undefined ? { authorization: req.headers.authorization } : {}) })
    handle(req, res).catch((err: unknown) => {
      // A helper misuse (e.g. `flip` past the end); make it visible rather than hang the test.
      process.stderr.write(`static-server: ${String(err)}\n`)
      if (!res.headersSent && !res.socket?.destroyed) res.writeHead(500).end()
      else res.destroy()
    })
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })

  let url = ''
  const self: StaticServer = {
    get url() {
      return url
    },
    requests,
    fault: undefined,
    count(match, method) {
      return requests.filter(
        (r) => (method === undefined || r.method === method) && (typeof match === 'string' ? r.url.startsWith(match) : match.test(r.url)),
      ).length
    },
    async close() {
      const closed = once(server, 'close')
      server.close()
      for (const socket of sockets) socket.destroy()
      await closed
    },
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const head = req.method === 'HEAD'
    if (opts.auth) {
      const expected =
        opts.auth.kind === 'basic' ? `Basic ${Buffer.from(`${opts.auth.login}:${opts.auth.password}`).toString('base64')}` : `Bearer ${opts.auth.token}`
      const given = req.headers.authorization
      if (given === undefined) return sendText(res, 401, { 'WWW-Authenticate': opts.auth.kind === 'basic' ? 'Basic realm="cache"' : 'Bearer' }, head)
      if (given !== expected) return sendText(res, 403, undefined, head)
    }
    if (!head && req.method !== 'GET') return sendText(res, 405)
    const fault = self.fault?.(req)
    if (fault?.kind === 'hang') return
    if (fault?.kind === 'status') return sendText(res, fault.status, fault.headers, head)
    if (fault?.kind === 'delayHeaders') await sleep(fault.ms)
    const pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    const type = contentType(pathname)
    if (fault?.kind === 'body') {
      const body = Buffer.from(fault.body)
      res.writeHead(fault.status ?? 200, { 'Content-Type': type, 'Content-Length': body.length })
      return void res.end(head ? undefined : body)
    }

    const file = resolve(root, `.${pathname}`)
    const size = file.startsWith(root + sep) ? await fileSize(file) : undefined
    if (size === undefined) return sendText(res, 404, undefined, head)

    if (fault?.kind === 'reset' || fault?.kind === 'truncate' || fault?.kind === 'wrongLength') {
      // Node's ServerResponse won't send a body that disagrees with Content-Length, so write raw.
      const socket = req.socket
      const length = fault.kind === 'wrongLength' ? size + fault.delta : size
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`)
      const sent = fault.kind === 'reset' ? fault.afterBytes : fault.kind === 'truncate' ? fault.bytes : size
      if (!head && sent > 0) await writeBody(socket, createReadStream(file, { end: Math.min(sent, size) - 1 }), opts.throttleBytesPerSec)
      if (fault.kind !== 'reset') return void socket.end()
      // Let the bytes reach the client before the RST, which discards unsent data.
      await sleep(50)
      return void socket.resetAndDestroy()
    }

    if (fault?.kind === 'flip' && (fault.offset < 0 || fault.offset >= size)) {
      throw new RangeError(`flip offset ${fault.offset} outside ${req.url} (${size} bytes)`)
    }
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': size })
    if (head) return void res.end()
    const rate = fault?.kind === 'trickle' ? fault.bytesPerSecond : opts.throttleBytesPerSec
    await writeBody(res, flipped(createReadStream(file), fault?.kind === 'flip' ? fault.offset : -1), rate)
    res.end()
  }

  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return self
}

function sendText(res: ServerResponse, status: number, headers: Record<string, string> = {}, head = false): void {
  const body = `${status} ${STATUS_CODES[status] ?? ''}\n`
  res.writeHead(status, { ...headers, 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) })
  res.end(head ? undefined : body)
}

function contentType(pathname: string): string {
  if (pathname.endsWith('.narinfo')) return 'text/x-nix-narinfo'
  if (pathname.endsWith('/nix-cache-info')) return 'text/x-nix-cache-info'
  if (/\.nar(\.[a-z0-9]+)?$/.test(pathname)) return 'application/x-nix-nar'
  return 'application/octet-stream'
}

async function fileSize(file: string): Promise<number | undefined> {
  try {
    const st = await stat(file)
    return st.isFile() ? st.size : undefined
  } catch {
    return undefined
  }
}

/** Yields `source`'s chunks with the byte at `offset` (if ≥ 0) inverted. */
async function* flipped(source: AsyncIterable<Buffer>, offset: number): AsyncGenerator<Buffer> {
  let pos = 0
  for await (const chunk of source) {
    if (offset >= pos && offset < pos + chunk.length) {
      const copy = Buffer.from(chunk)
      copy[offset - pos] = (copy[offset - pos]) ^ 0xff
      yield copy
    } else yield chunk
    pos += chunk.length
  }
}

/**
 * Writes `source` to `dest` (without ending it), honouring backpressure, at most `bytesPerSec`
 * when given, in slices of a tenth of a second. Stops quietly once `dest` is destroyed.
 */
async function writeBody(dest: Writable, source: AsyncIterable<Buffer>, bytesPerSec?: number): Promise<void> {
  const slice = bytesPerSec === undefined ? Infinity : Math.max(1, Math.floor(bytesPerSec / 10))
  for await (const chunk of source) {
    for (let i = 0; i < chunk.length; i += slice) {
      if (dest.destroyed) return
      const part = chunk.subarray(i, i + slice)
      if (bytesPerSec !== undefined) await sleep((part.length / bytesPerSec) * 1000)
      if (dest.destroyed) return
      if (!dest.write(part)) {
        // Whichever event wins, the other listener is removed (no listener pile-up).
        const ac = new AbortController()
        await Promise.race([once(dest, 'drain', { signal: ac.signal }), once(dest, 'close', { signal: ac.signal })]).finally(() => ac.abort())
      }
    }
  }
}
