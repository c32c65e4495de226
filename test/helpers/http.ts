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
