/**
 * A WAN-like link in front of a static upstream, on loopback: a node:http proxy
 * that holds back every response's first byte until `--delay-ms` (30) after the
 * request arrived, and paces each connection's writes to `--mbit` (100) Mbit/s.
 * It is a simulation (no packet loss, no TCP slow start, no real round trips
 * for the handshake); the proxies under test only see a slower, farther upstream.
 *
 *   node bench/proxy/wan-proxy.mjs --upstream http://127.0.0.1:PORT --port P [--delay-ms 30] [--mbit 100]
 *
 * Prints `wan-proxy listening on http://127.0.0.1:P` once it accepts connections.
 */
import { Agent, createServer, request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'

const argv = process.argv.slice(2)
const opt = (name, fallback) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : fallback
}
const upstream = new URL(opt('--upstream'))
const port = Number(opt('--port', '0'))
const delayMs = Number(opt('--delay-ms', '30'))
const bytesPerMs = (Number(opt('--mbit', '100')) * 1e6) / 8 / 1000
// Paced in slices of this size, so a large body goes out as a steady stream, not in bursts.
const SLICE = 16 * 1024
const CATCH_UP_MS = 10

const agent = new Agent({ keepAlive: true, maxSockets: 256 })
/** When each client connection may send its next byte (ms, performance.now()). */
const nextFree = new WeakMap()

/** Writes `chunk` to `res` no faster than the connection's rate; resolves when it may write again. */
async function paced(res, chunk) {
  const socket = res.socket
  for (let off = 0; off < chunk.length; off += SLICE) {
    const slice = chunk.subarray(off, off + SLICE)
    const now = performance.now()
    // A late timer (a loaded machine) may be made up for, up to CATCH_UP_MS; an idle connection starts afresh.
    const at = Math.max(now - CATCH_UP_MS, nextFree.get(socket) ?? now)
    nextFree.set(socket, at + slice.length / bytesPerMs)
    // Sleeping only when more than a millisecond ahead keeps the average rate without 1 ms timer steps per slice.
    if (at - now > 1) await sleep(at - now)
    if (!res.write(slice)) await new Promise((resolve) => res.once('drain', resolve))
  }
}

const server = createServer((req, res) => {
  const arrived = performance.now()
  const up = request(
    { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: { ...req.headers, host: upstream.host }, agent },
    async (upRes) => {
      upRes.pause()
      const wait = arrived + delayMs - performance.now()
      if (wait > 0) await sleep(wait)
      res.writeHead(upRes.statusCode ?? 502, upRes.headers)
      try {
        for await (const chunk of upRes) await paced(res, chunk)
        res.end()
      } catch {
        res.destroy()
      }
    },
  )
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502).end()
    else res.destroy()
  })
  req.pipe(up)
})
server.keepAliveTimeout = 65_000
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`wan-proxy listening on http://127.0.0.1:${server.address().port}\n`)
})
process.on('SIGTERM', () => {
  server.close()
  server.closeAllConnections()
  agent.destroy()
  process.exit(0)
})
