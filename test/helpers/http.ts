/**
 * A raw HTTP request for tests that must send a path exactly as written
 * (fetch normalises `..` and `%2e%2e` away before sending).
 */
import { request } from 'node:http'

/** Sends `method path` verbatim to `baseUrl`; resolves with the status and body. */
export function rawRequest(baseUrl: string, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const u = new URL(baseUrl)
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * One plain GET on a fresh connection: the status, the body received, and
 * whether it arrived complete. A connection cut off midway (narthex killed, a
 * NAR failing verification) resolves with `complete: false` instead of failing.
 */
export function getOnce(url: string, timeoutMs = 30_000): Promise<{ status: number; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      // Whichever comes first: the end, or the connection cut off.
      for (const ev of ['end', 'error', 'aborted', 'close']) res.on(ev, () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete: res.complete }))
    })
    req.on('error', reject)
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs / 1000} s`)))
    req.end()
  })
}

/** A small deterministic pseudo-random generator (xorshift32), so a run can be repeated from its seed. */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
}
