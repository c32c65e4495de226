import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { startStaticServer, type StaticServer } from './static-server.js'

const NARINFO = 'StorePath: /nix/store/00000000000000000000000000000000-x\nURL: nar/x.nar\n'
const NAR = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251))
const NAR_URL = '/nar/x.nar'

let dir: string
let server: StaticServer

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'narthex-static-'))
  await mkdir(join(dir, 'nar'))
  await writeFile(join(dir, 'abc.narinfo'), NARINFO)
  await writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n')
  await writeFile(join(dir, 'nar', 'x.nar'), NAR)
  server = await startStaticServer(dir)
})

after(async () => {
  await server.close()
  await rm(dir, { recursive: true, force: true })
})

/** Sets the shared server's fault hook and clears its request log. */
function withFault(fault: StaticServer['fault']): void {
  server.fault = fault
  server.requests.length = 0
}

test('serves files with GET and HEAD, 404 otherwise, and logs requests', async () => {
  withFault(undefined)
  const res = await fetch(`${server.url}/abc.narinfo`)
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'text/x-nix-narinfo')
  assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(NARINFO)))
  assert.equal(await res.text(), NARINFO)

  const head = await fetch(`${server.url}${NAR_URL}?q=1`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), String(NAR.length))
  assert.equal(head.headers.get('content-type'), 'application/x-nix-nar')
  assert.equal((await head.arrayBuffer()).byteLength, 0)

  for (const path of ['/missing.narinfo', '/nar', '/..%2f..%2fetc%2fpasswd']) {
    const r = await fetch(`${server.url}${path}`)
    assert.equal(r.status, 404, path)
    await r.body?.cancel()
  }
  assert.equal((await fetch(`${server.url}/abc.narinfo`, { method: 'POST', body: 'x' })).status, 405)

  assert.deepEqual(server.requests.slice(0, 2), [
    { method: 'GET', url: '/abc.narinfo' },
    { method: 'HEAD', url: `${NAR_URL}?q=1` },
  ])
  assert.equal(server.count('/nar'), 2)
  assert.equal(server.count(/\.narinfo$/), 3)
  assert.equal(server.count(/\.narinfo$/, 'GET'), 2)
})

test('fault status: answers with the status and headers', async () => {
  withFault((req) => (req.url === NAR_URL ? { kind: 'status', status: 503, headers: { 'Retry-After': '1' } } : undefined))
  const res = await fetch(`${server.url}${NAR_URL}`)
  assert.equal(res.status, 503)
  assert.equal(res.headers.get('retry-after'), '1')
  await res.text()
  assert.equal((await fetch(`${server.url}/abc.narinfo`)).status, 200)
})

test('fault delayHeaders: answers normally, late', async () => {
  withFault(() => ({ kind: 'delayHeaders', ms: 200 }))
  const start = performance.now()
  const res = await fetch(`${server.url}${NAR_URL}`)
  assert.ok(performance.now() - start >= 190)
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), NAR)
})

test('fault hang: never answers, and close() still returns promptly', async () => {
  const own = await startStaticServer(dir)
  own.fault = () => ({ kind: 'hang' })
  const pending = fetch(`${own.url}${NAR_URL}`)
  pending.catch(() => {})
  const early = await Promise.race([pending.then(() => 'answered'), new Promise((r) => setTimeout(r, 200, 'waiting'))])
  assert.equal(early, 'waiting')
  const start = performance.now()
  await own.close()
  assert.ok(performance.now() - start < 1000)
  await assert.rejects(pending)
})

test('fault reset: headers and some bytes, then a socket error', async () => {
  withFault(() => ({ kind: 'reset', afterBytes: 100 }))
  const res = await fetch(`${server.url}${NAR_URL}`)
  assert.equal(res.headers.get('content-length'), String(NAR.length))
  await assert.rejects(res.arrayBuffer())
})

test('fault truncate: full Content-Length, short body', async () => {
  withFault(() => ({ kind: 'truncate', bytes: 1000 }))
  const res = await fetch(`${server.url}${NAR_URL}`)
  assert.equal(res.headers.get('content-length'), String(NAR.length))
  const reader = res.body!.getReader()
  let received = 0
  await assert.rejects(async () => {
    for (;;) {
      const { done, value } = (await reader.read()) as { done: boolean; value: Uint8Array }
      if (done) break
      received += value.length
    }
  })
  assert.equal(received, 1000)
})

test('fault flip: same length, exactly one byte inverted', async () => {
  withFault(() => ({ kind: 'flip', offset: 3000 }))
  const body = Buffer.from(await (await fetch(`${server.url}${NAR_URL}`)).arrayBuffer())
  assert.equal(body.length, NAR.length)
  const diffs = [...body.keys()].filter((i) => body[i] !== NAR[i])
  assert.deepEqual(diffs, [3000])
  assert.equal(body[3000], (NAR[3000]) ^ 0xff)
})

test('fault wrongLength: too long fails the client, too short cuts the body', async () => {
  withFault(() => ({ kind: 'wrongLength', delta: 10 }))
  const long = await fetch(`${server.url}${NAR_URL}`)
  assert.equal(long.headers.get('content-length'), String(NAR.length + 10))
  await assert.rejects(long.arrayBuffer())

  withFault(() => ({ kind: 'wrongLength', delta: -10 }))
  const short = await fetch(`${server.url}${NAR_URL}`)
  assert.deepEqual(Buffer.from(await short.arrayBuffer()), NAR.subarray(0, NAR.length - 10))
})

test('fault trickle: the body arrives intact at the given rate', async () => {
  withFault(() => ({ kind: 'trickle', bytesPerSecond: 10_000 }))
  const start = performance.now()
  const body = Buffer.from(await (await fetch(`${server.url}${NAR_URL}`)).arrayBuffer())
  assert.deepEqual(body, NAR)
  assert.ok(performance.now() - start >= 350, 'about 400 ms for 4096 bytes at 10 kB/s')
})

test('fault body: serves replacement content, even for a missing file', async () => {
  withFault(() => ({ kind: 'body', body: 'forged\n', status: 203 }))
  const res = await fetch(`${server.url}/nothere.narinfo`)
  assert.equal(res.status, 203)
  assert.equal(res.headers.get('content-type'), 'text/x-nix-narinfo')
  assert.equal(await res.text(), 'forged\n')
})

test('option throttleBytesPerSec slows every body', async () => {
  const slow = await startStaticServer(dir, { throttleBytesPerSec: 20_000 })
  try {
    const start = performance.now()
    const body = Buffer.from(await (await fetch(`${slow.url}${NAR_URL}`)).arrayBuffer())
    assert.deepEqual(body, NAR)
    assert.ok(performance.now() - start >= 150, 'about 200 ms for 4096 bytes at 20 kB/s')
  } finally {
    await slow.close()
  }
})
