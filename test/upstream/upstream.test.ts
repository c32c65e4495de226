/**
 * One upstream against the fault-injecting static server: narinfo look-ups, NAR and build-log
 * downloads, retries and the health state. Each test names what broke when it fails.
 */
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buffer, text } from 'node:stream/consumers'
import { after, afterEach, before, test } from 'node:test'
import { isNarthexError } from '../../src/errors.js'
import { formatNarInfo, generateSecretKey } from '../../src/protocol/index.js'
import { Upstream, type UpstreamOptions } from '../../src/upstream/index.js'
import { addToCache, fakePath } from '../helpers/fake-cache.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const key = generateSecretKey('up-1')
const present = fakePath('present-1.0', 'here\n', key)
const other = fakePath('other-1.0', 'other\n', key)
const DRV = `${'1'.repeat(32)}-hello-1.0.drv`

let dir: string
let server: StaticServer
const opened: Upstream[] = []

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'narthex-upstream-test-'))
  await addToCache(dir, present)
  // A narinfo filed under another path's hash part.
  await writeFile(join(dir, `${other.hashPart}.narinfo`), formatNarInfo(present.info))
  await mkdir(join(dir, 'log'), { recursive: true })
  await writeFile(join(dir, 'log', DRV), 'building hello\n')
  server = await startStaticServer(dir)
})
afterEach(async () => {
  server.fault = undefined
  server.requests.length = 0
  await Promise.all(opened.splice(0).map((u) => u.close()))
})
after(async () => {
  await server.close()
  await rm(dir, { recursive: true, force: true })
})

function upstream(options: Partial<UpstreamOptions> = {}): Upstream {
  const u = new Upstream({
    name: 'up-1',
    url: server.url,
    timeoutMs: 1000,
    retries: 0,
    maxConnections: 4,
    minBytesPerSecond: 0,
    failureThreshold: 3,
    downForMs: 30_000,
    ...options,
  })
  opened.push(u)
  return u
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
    return undefined
  } catch (err) {
    return isNarthexError(err) ? err.code : `not a NarthexError: ${String(err)}`
  }
}

test('a narinfo is present, or absent on 404; neither counts against health', async () => {
  const u = upstream()
  const found = await u.fetchNarInfo(present.hashPart)
  assert.equal(found.kind, 'present')
  assert.deepEqual(found.kind === 'present' && found.info.narHash, present.info.narHash)
  assert.deepEqual(await u.fetchNarInfo('0'.repeat(32)), { kind: 'absent' })
  assert.equal(u.health().consecutiveFailures, 0, 'a 404 counted as a failure')
})

test('a narinfo for another store path than asked is UPSTREAM_INVALID', async () => {
  assert.equal(await codeOf(upstream().fetchNarInfo(other.hashPart)), 'UPSTREAM_INVALID', 'a narinfo under the wrong hash part was accepted')
})

test('a transient 5xx is retried and the retry answers', async () => {
  const u = upstream({ retries: 1 })
  let n = 0
  server.fault = () => (n++ === 0 ? { kind: 'status', status: 503 } : undefined)
  assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present', 'a single 503 was not retried')
  assert.equal(server.count(`/${present.hashPart}.narinfo`), 2)
  assert.equal(u.health().consecutiveFailures, 0)
})

test('after failureThreshold failures the upstream is down and fails fast without a request', async () => {
  const u = upstream({ failureThreshold: 2 })
  server.fault = () => ({ kind: 'status', status: 500 })
  for (let i = 0; i < 2; i++) assert.equal(await codeOf(u.fetchNarInfo(present.hashPart)), 'UPSTREAM_UNAVAILABLE')
  assert.equal(u.isDown, true, 'repeated failures did not mark the upstream down')
  server.requests.length = 0
  assert.equal(await codeOf(u.fetchNarInfo(present.hashPart)), 'UPSTREAM_UNAVAILABLE')
  assert.equal(await codeOf(u.openNar(`${server.url}/${present.info.url}`)), 'UPSTREAM_UNAVAILABLE')
  assert.equal(await codeOf(u.openLog(DRV)), 'UPSTREAM_UNAVAILABLE')
  assert.equal(server.requests.length, 0, 'a down upstream was still asked')
})

test('a closed upstream opens no connection: asked after close, before or after its first request, it fails without a request', async () => {
  for (const warm of [false, true]) {
    const u = upstream()
    if (warm) assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present')
    await u.close()
    server.requests.length = 0
    assert.equal(await codeOf(u.fetchNarInfo(present.hashPart)), 'UPSTREAM_UNAVAILABLE', `warm: ${warm}`)
    assert.equal(server.requests.length, 0, `a closed upstream (warm: ${warm}) still asked`)
  }
})

test('a hung narinfo request gives up at timeoutMs with UPSTREAM_TIMEOUT', async () => {
  const u = upstream({ timeoutMs: 200 })
  server.fault = () => ({ kind: 'hang' })
  const started = Date.now()
  assert.equal(await codeOf(u.fetchNarInfo(present.hashPart)), 'UPSTREAM_TIMEOUT')
  assert.ok(Date.now() - started < 2000, 'giving up on a hung upstream took far longer than timeoutMs')
})

test('NAR URLs resolve on the upstream and may not point at another host', () => {
  const u = upstream()
  assert.equal(u.resolveUrl('nar/x.nar'), `${server.url}/nar/x.nar`)
  assert.throws(() => u.resolveUrl('http://evil.example/nar/x.nar'), (err) => isNarthexError(err, 'UPSTREAM_INVALID'), 'a NAR URL on another host was accepted')
})

test('a NAR is opened with its length; a missing one is NOT_FOUND and does not count against health', async () => {
  const u = upstream()
  const res = await u.openNar(`${server.url}/${present.info.url}`)
  assert.equal(res.contentLength, present.nar.length)
  res.body.resume()
  assert.equal(await codeOf(u.openNar(`${server.url}/nar/missing.nar`)), 'NOT_FOUND')
  assert.equal(u.health().consecutiveFailures, 0, 'a missing NAR counted as a failure')
})

test('failing NAR downloads count against health (what failing build logs must not do)', async () => {
  const u = upstream({ failureThreshold: 2 })
  server.fault = () => ({ kind: 'status', status: 500 })
  for (let i = 0; i < 2; i++) assert.equal(await codeOf(u.openNar(`${server.url}/${present.info.url}`)), 'UPSTREAM_UNAVAILABLE')
  assert.equal(u.isDown, true, 'repeated NAR failures did not mark the upstream down')
})

test('a build log is streamed; a missing one is NOT_FOUND', async () => {
  const u = upstream()
  const res = await u.openLog(DRV)
  assert.equal(await text(res.body), 'building hello\n')
  assert.equal(await codeOf(u.openLog(`${'2'.repeat(32)}-missing.drv`)), 'NOT_FOUND')
})

test('regression: failing build-log requests (5xx, resets, hangs) never mark the upstream down for narinfos and NARs', async () => {
  const u = upstream({ failureThreshold: 2, timeoutMs: 300 })
  const faults = [{ kind: 'status', status: 500 }, { kind: 'status', status: 502 }, { kind: 'hang' }, { kind: 'hang' }] as const
  for (const fault of faults) {
    server.fault = (req) => (req.url?.startsWith('/log/') ? fault : undefined)
    const code = await codeOf(u.openLog(DRV))
    assert.ok(code === 'UPSTREAM_UNAVAILABLE' || code === 'UPSTREAM_TIMEOUT', `a ${fault.kind} log answer failed with ${code}`)
  }
  // A reset after the headers: the body breaks off, which the reader sees.
  server.fault = (req) => (req.url?.startsWith('/log/') ? { kind: 'reset', afterBytes: 3 } : undefined)
  const res = await u.openLog(DRV)
  await assert.rejects(text(res.body))

  assert.equal(u.isDown, false, 'failed build-log requests marked the upstream down')
  assert.equal(u.health().consecutiveFailures, 0, 'failed build-log requests counted against health')
  assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present')
  const nar = await u.openNar(`${server.url}/${present.info.url}`)
  assert.ok((await buffer(nar.body)).equals(present.nar), 'the NAR was not served after the log failures')
})
