/**
 * Node compiles its own HTTP server code (the parser's callbacks, `writeHead`, the
 * socket's `writev`, `end`) at its first use: about 10 ms that the first client of a
 * fresh process would otherwise wait for. A few requests to a throwaway server on
 * 127.0.0.1, made before the real server listens, compile it instead. narthex's own
 * handlers are not involved: nothing is counted, logged or audited.
 *
 * {@link warmUpstreamClient} does the same for the upstream client: loading
 * undici's Pool and compiling its HTTP parser (WebAssembly, compiled at a Pool's
 * first connection), which the first upstream request would otherwise wait for.
 */
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { loadPool } from '../undici.js'

const WARM_UP_TIMEOUT_MS = 2_000

/** Runs a GET, a HEAD and a GET through a throwaway server, each on a new connection. */
export async function warmHttp(): Promise<void> {
  await withThrowawayServer(async (port) => {
    for (const method of ['GET', 'HEAD', 'GET']) await get(port, method)
  })
}

/** Loads undici's Pool and runs one GET through one to a throwaway server. */
export async function warmUpstreamClient(): Promise<void> {
  const Pool = await loadPool()
  await withThrowawayServer(async (port) => {
    const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1, headersTimeout: WARM_UP_TIMEOUT_MS, bodyTimeout: WARM_UP_TIMEOUT_MS })
    try {
      const res = await pool.request({ path: '/0.narinfo', method: 'GET', signal: AbortSignal.timeout(WARM_UP_TIMEOUT_MS) })
      await res.body.text()
    } finally {
      await pool.destroy()
    }
  })
}

async function withThrowawayServer(use: (port: number) => Promise<void>): Promise<void> {
  const body = Buffer.from('StorePath: /nix/store/x\n')
  const server: Server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': body.length })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  try {
    await use((server.address() as AddressInfo).port)
  } finally {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

function get(port: number, method: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/0.narinfo', method, agent: false, signal: AbortSignal.timeout(WARM_UP_TIMEOUT_MS) }, (res) => {
      res.resume()
      res.on('end', () => resolve())
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}
