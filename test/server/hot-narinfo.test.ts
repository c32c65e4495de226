/**
 * The warm cache's hot path (a narinfo served lately, answered without a
 * promise): the same answer as the first time, the same counters, and access
 * control still applied, over real HTTP.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { AccessControl } from '../../src/server/index.js'
import { addToCache, fakePath } from '../helpers/fake-cache.js'
import { servedCaches } from '../helpers/served-cache.js'

/** A narthex HTTP server over a fresh cache with one fake upstream, closed after each test. */
const { serve, cache } = servedCaches()

/** The value of one sample in Prometheus text, 0 when absent. */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`))
  return line ? Number(line.split(' ').pop()) : 0
}

test('a warm narinfo is the cold answer again, counted as a hit in every series a request counts in', async () => {
  const base = await serve()
  const p = fakePath('hot-1.0', 'hot\n'.repeat(40), cache().fakes[0].key)
  await addToCache(cache().fakes[0].dir, p)
  const cold = await fetch(`${base}/${p.hashPart}.narinfo`)
  assert.equal(cold.status, 200)
  const text = await cold.text()
  const N = 5
  for (let i = 0; i < N; i++) {
    const warm = await fetch(`${base}/${p.hashPart}.narinfo`)
    assert.equal(warm.status, 200)
    assert.equal(warm.headers.get('content-type'), 'text/x-nix-narinfo')
    assert.equal(await warm.text(), text)
  }
  const head = await fetch(`${base}/${p.hashPart}.narinfo`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(text)))
  assert.equal(await head.text(), '')
  // A query string takes the full path and gets the same answer.
  assert.equal(await (await fetch(`${base}/${p.hashPart}.narinfo?x=1`)).text(), text)

  const metrics = await cache().metrics.registry.metrics()
  assert.equal(sample(metrics, 'narthex_http_requests_total', 'route="narinfo",status="200"'), N + 3)
  assert.equal(sample(metrics, 'narthex_http_request_duration_seconds_count', 'route="narinfo"'), N + 3)
  assert.equal(sample(metrics, 'narthex_cache_requests_total', 'kind="narinfo",outcome="hit"'), N + 2)
  assert.equal(sample(metrics, 'narthex_cache_requests_total', 'kind="narinfo",outcome="miss"'), 1)
  assert.equal(sample(metrics, 'narthex_narinfo_lookups_total', 'outcome="hit"'), N + 2)
})

test('with private reading a warm narinfo still needs a token with the read scope', async () => {
  const access = new AccessControl(true, [
    { name: 'reader', secret: 'r'.repeat(32), scopes: ['read'] },
    { name: 'pusher', secret: 'p'.repeat(32), scopes: ['push'] },
  ])
  const base = await serve(access)
  const p = fakePath('hot-private-1.0', 'private\n'.repeat(40), cache().fakes[0].key)
  await addToCache(cache().fakes[0].dir, p)
  const url = `${base}/${p.hashPart}.narinfo`
  const as = (secret: string) => ({ headers: { authorization: `Bearer ${secret}` } })
  assert.equal((await fetch(url, as('r'.repeat(32)))).status, 200)
  assert.equal((await fetch(url, as('r'.repeat(32)))).status, 200, 'warm, with the token')
  assert.equal((await fetch(url)).status, 401, 'warm, without a token')
  assert.equal((await fetch(url, as('x'.repeat(32)))).status, 401, 'warm, with an unknown token')
  assert.equal((await fetch(url, as('p'.repeat(32)))).status, 403, 'warm, with a token that may only push')
})
