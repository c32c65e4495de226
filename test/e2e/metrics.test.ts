/**
 * `/metrics` with worker processes (`workers: 2`): hot narinfos and stored NARs
 * are answered by the workers, the rest by the core, and every counter is the
 * sum over all of them. The request log names each request once, from the
 * process that answered it, and no line carries a token or the secret key.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { formatPublicKey, generateSecretKey, toPublicKey } from '../../src/protocol/index.js'
import { addToCache, fakePath, type FakePath } from '../helpers/fake-cache.js'
import { getOnce, rawRequest } from '../helpers/http.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const N = 12
const PUSH_TOKEN = 'push-token-0123456789-abcdef'

/** The value of one sample of the Prometheus text, 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const m = /^[^{ ]+(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (!m) continue
    const got = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(m[2])
  }
  return total
}

describe('/metrics with two worker processes', () => {
  let dir: string
  let up: StaticServer
  let narthex: NarthexProcess
  let paths: FakePath[]

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narthex-metrics-'))
    const key = generateSecretKey('up-1')
    paths = Array.from({ length: N }, (_, i) => fakePath(`metrics-${i}`, `contents of path ${i} `.repeat(50 + i), key))
    for (const p of paths) await addToCache(dir, p)
    up = await startStaticServer(dir)
    narthex = await NarthexProcess.start({
      workers: 2,
      upstreams: [{ name: 'up-1', url: up.url, publicKeys: [formatPublicKey(toPublicKey(key))], retries: 0 }],
      // The test counts the hits and misses it causes: nothing fetched ahead of it.
      prefetch: { references: false, nars: false },
      push: { tokens: [PUSH_TOKEN], minSignatures: 0 },
      log: { level: 'info', requests: 'info' },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  test('after N cold and N warm narinfo and NAR requests, the summed counters say N each', async () => {
    const get = async (path: string) => {
      // A fresh connection each time, so that both workers get some.
      const r = await getOnce(`${narthex.url}${path}`)
      assert.equal(r.status, 200, path)
      return r.body.length
    }
    let narBytes = 0
    for (const pass of ['cold', 'warm']) {
      for (const p of paths) {
        await get(`/${p.hashPart}.narinfo`)
        narBytes += await get(`/${p.info.url}`)
      }
      if (pass === 'cold') assert.equal(up.count('/nar/'), N, 'each NAR fetched once')
    }
    // A worker counts a request once its response has ended: give the last ones a moment.
    let text = ''
    for (let i = 0; i < 50; i++) {
      text = await (await fetch(`${narthex.url}/metrics`)).text()
      if (sample(text, 'narthex_http_requests_total', { route: 'nar', status: '200' }) >= 2 * N) break
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.equal(sample(text, 'narthex_cache_requests_total', { kind: 'narinfo', outcome: 'hit' }), N, 'warm narinfos')
    assert.equal(sample(text, 'narthex_cache_requests_total', { kind: 'narinfo', outcome: 'miss' }), N, 'cold narinfos')
    assert.equal(sample(text, 'narthex_cache_requests_total', { kind: 'nar', outcome: 'hit' }), N, 'warm NARs')
    assert.equal(sample(text, 'narthex_cache_requests_total', { kind: 'nar', outcome: 'miss' }), N, 'cold NARs')
    assert.equal(sample(text, 'narthex_http_requests_total', { route: 'narinfo', status: '200' }), 2 * N)
    assert.equal(sample(text, 'narthex_http_requests_total', { route: 'nar', status: '200' }), 2 * N)
    assert.equal(sample(text, 'narthex_nar_bytes_served_total'), narBytes, 'NAR bytes served, summed')
    assert.equal(sample(text, 'narthex_nar_bytes_fetched_total', { upstream: 'up-1' }), narBytes / 2, 'NAR bytes fetched once')
    assert.equal(sample(text, 'narthex_upstream_request_duration_seconds_count', { upstream: 'up-1', kind: 'narinfo' }), N)
    assert.equal(sample(text, 'narthex_store_bytes'), narBytes / 2)
    for (const name of ['narthex_conflicts_total', 'narthex_prefetch_bytes_total', 'narthex_refusals_total', 'narthex_nar_verification_failures_total', 'narthex_nar_downloads_in_flight', 'narthex_upstream_up']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exported`)
    }
    assert.match(text, /^narthex_prefetch_bytes_total\{used="no"\} 0$/m)

    // The request log: one line per request, from the process that answered it; hits from both workers.
    const lines = narthex.logs.filter((l) => l.msg === 'request' && (l.route === 'narinfo' || l.route === 'nar'))
    assert.equal(lines.length, 4 * N, 'one request-log line per narinfo and NAR request')
    const hitters = new Set(lines.filter((l) => l.outcome === 'hit').map((l) => l.pid))
    assert.ok(hitters.size >= 2, `hits answered by several processes (pids ${[...hitters].join(', ')})`)
    for (const l of lines) for (const k of ['req', 'status', 'bytes', 'ms', 'outcome']) assert.ok(k in l, `${k} in ${JSON.stringify(l)}`)
  })

  test('no log line, metric or page carries a push token or the secret signing key', async () => {
    const wrong = await rawRequest(narthex.url, `/${paths[0].hashPart}.narinfo`, 'PUT', { authorization: 'Bearer wrong-token-0123456789abcdef' })
    assert.equal(wrong.status, 401)
    const right = await rawRequest(narthex.url, `/${'1'.repeat(32)}.narinfo`, 'PUT', { authorization: `Bearer ${PUSH_TOKEN}` })
    assert.notEqual(right.status, 401)
    for (let i = 0; i < 50 && narthex.logs.filter((l) => l.msg === 'request' && l.route === 'push').length < 2; i++) await new Promise((r) => setTimeout(r, 100))
    const secret = (await readFile(join(narthex.dir, 'narthex.key'), 'utf8')).trim()
    // The first 30 bytes of the secret (its seed) encode to these 40 characters wherever they appear.
    const secretPart = secret.slice(secret.indexOf(':') + 1, secret.indexOf(':') + 41)
    const texts = [
      ...narthex.logs.map((l) => JSON.stringify(l)),
      await (await fetch(`${narthex.url}/metrics`)).text(),
      await (await fetch(`${narthex.url}/`)).text(),
      await (await fetch(`${narthex.url}/status.json`)).text(),
    ]
    for (const t of texts) {
      assert.ok(!t.includes(PUSH_TOKEN), `a push token in: ${t.slice(0, 200)}`)
      assert.ok(!t.includes('wrong-token-0123456789abcdef'), `a presented token in: ${t.slice(0, 200)}`)
      assert.ok(!t.includes(secretPart), `the secret key in: ${t.slice(0, 200)}`)
    }
    assert.equal(narthex.logs.filter((l) => l.msg === 'request' && l.route === 'push').length, 2, 'both pushes were logged')
  })
})
