/**
 * An s3:// upstream whose endpoint stalls, before its answer or in the middle of a NAR: the
 * upstream gives up after `timeoutMs` as it does over HTTP, instead of hanging a download for
 * ever. The endpoint is a raw TCP server here, since no real S3 server can be told to stall.
 */
import assert from 'node:assert/strict'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { after, before, test } from 'node:test'
import { isNarthexError } from '../../src/errors.js'
import { Upstream } from '../../src/upstream/index.js'

let server: Server
let port: number
const sockets = new Set<Socket>()
/** What the endpoint does with a request: nothing, or the start of a 1 MiB object and then nothing. */
let mode: 'silent' | 'partial' = 'silent'
const savedEnv = { ...process.env }

before(async () => {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'stall', AWS_SECRET_ACCESS_KEY: 'stall-secret', AWS_EC2_METADATA_DISABLED: 'true' })
  server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    socket.once('data', () => {
      if (mode === 'partial') socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nContent-Type: application/octet-stream\r\n\r\n' + 'x'.repeat(1000))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  port = (server.address() as AddressInfo).port
})
after(async () => {
  process.env = savedEnv
  for (const s of sockets) s.destroy()
  await new Promise((r) => server.close(r))
})

function upstream(): Upstream {
  return new Upstream({ name: 'stalling', url: `s3://nix-cache?endpoint=http://127.0.0.1:${port}`, timeoutMs: 1000, retries: 0, maxConnections: 2, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 1000 })
}

test('an endpoint that never answers a NAR request is UPSTREAM_TIMEOUT after timeoutMs', async () => {
  mode = 'silent'
  const u = upstream()
  const started = Date.now()
  try {
    await assert.rejects(u.openNar(u.resolveUrl('nar/x.nar')), (err) => isNarthexError(err, 'UPSTREAM_TIMEOUT'))
    assert.ok(Date.now() - started < 5000, `gave up only after ${Date.now() - started} ms`)
  } finally {
    await u.close()
  }
})

test('a NAR that stops arriving midway fails after timeoutMs of silence', async () => {
  mode = 'partial'
  const u = upstream()
  try {
    const nar = await u.openNar(u.resolveUrl('nar/x.nar'))
    const started = Date.now()
    await assert.rejects(
      (async () => {
        for await (const chunk of nar.body) void chunk
      })(),
      (err: Error) => err.name === 'TimeoutError' || /timed out/.test(err.message),
    )
    assert.ok(Date.now() - started < 5000, `gave up only after ${Date.now() - started} ms`)
  } finally {
    await u.close()
  }
})
