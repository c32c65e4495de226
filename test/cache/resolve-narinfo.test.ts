/**
 * Narinfo resolution through the Cache facade, against fake upstreams (the static server) and a
 * real Store in a temporary directory. Each test names what broke when it fails.
 */
import assert from 'node:assert/strict'
import { afterEach, test } from 'node:test'
import { parseNarInfo, toPublicKey, validSigners } from '../../src/protocol/index.js'
import { addToCache, fakePath, startCache, type CacheUnderTest } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})

test('an admitted narinfo is served re-signed by narthex, pointing at its own NAR name, and indexed', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('hello-1.0', 'hello\n', up.key)
  await addToCache(up.dir, p)

  const answer = await t.cache.getNarInfo(p.hashPart)
  assert.equal(answer.kind, 'found', 'a path signed by a trusted key was not admitted')
  const served = parseNarInfo(answer.text)
  assert.equal(served.url, `nar/${p.hashPart}/${p.fileName}`, 'the served URL is not narthex\'s content-addressed NAR name under the path\'s hash part')
  assert.deepEqual(served.narHash, p.info.narHash)
  assert.deepEqual(
    validSigners(served, [toPublicKey(t.key), toPublicKey(up.key)]),
    ['narthex-test', 'up-1'].sort(),
    'the served narinfo lacks a valid narthex signature or dropped the verified upstream one',
  )
  assert.ok(await t.store.getNarInfo(p.hashPart), 'the admission was not written to the index')
  const audit = await t.auditEntries()
  assert.deepEqual(
    audit.map((e) => [e.decision, e.storePath, e.upstreams]),
    [['admit', p.storePath, ['up-1']]],
    'the admission was not audited',
  )

  // Served again from the LRU or the index: the upstream is not asked twice.
  const again = await t.cache.getNarInfo(p.hashPart)
  assert.equal(again.kind === 'found' && again.text, answer.text)
  assert.equal(up.server.count(`/${p.hashPart}.narinfo`), 1, 'an admitted narinfo was looked up upstream again')
})

test('an unsigned narinfo is refused: absent to the client, audited, never indexed', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('unsigned-1.0', 'x\n')
  await addToCache(up.dir, p)

  assert.deepEqual(await t.cache.getNarInfo(p.hashPart), { kind: 'absent' })
  assert.equal(await t.store.getNarInfo(p.hashPart), undefined, 'a refused path was indexed')
  const audit = await t.auditEntries()
  assert.deepEqual(
    audit.map((e) => [e.decision, e.reason]),
    [['refuse', 'INSUFFICIENT_SIGNATURES']],
    'the refusal was not audited with its reason',
  )
})

test('absent everywhere is a 404 and is remembered: the upstream is not asked again', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('missing-1.0', 'x\n', up.key)

  assert.deepEqual(await t.cache.getNarInfo(p.hashPart), { kind: 'absent' })
  assert.deepEqual(await t.cache.getNarInfo(p.hashPart), { kind: 'absent' })
  assert.equal(up.server.count(`/${p.hashPart}.narinfo`), 1, 'the negative answer was not remembered')

  // forget() (after a push) drops the remembered absence.
  await addToCache(up.dir, p)
  t.cache.forget(p.hashPart)
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found', 'forget() kept a stale absence')
})

test('an upstream that cannot be asked makes the narinfo unavailable (503), never absent, and nothing sticks once it recovers', async () => {
  t = await startCache({ upstream: { failureThreshold: 100 } })
  const [up] = t.fakes
  const p = fakePath('flaky-1.0', 'x\n', up.key)
  await addToCache(up.dir, p)

  up.server.fault = () => ({ kind: 'status', status: 500 })
  const answer = await t.cache.getNarInfo(p.hashPart)
  assert.equal(answer.kind, 'unavailable', 'a 500 from the only upstream was answered as absent (Nix would cache a 404)')
  assert.ok(answer.kind === 'unavailable' && answer.retryAfterS >= 1)

  up.server.fault = undefined
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found', 'an unavailable answer was remembered as absent')
})

test('an upstream marked down after repeated failures makes narinfos unavailable, not absent', async () => {
  t = await startCache({ upstream: { failureThreshold: 1 } })
  const [up] = t.fakes
  const a = fakePath('down-a', 'a\n', up.key)
  const b = fakePath('down-b', 'b\n', up.key)
  await addToCache(up.dir, a)
  await addToCache(up.dir, b)

  up.server.fault = () => ({ kind: 'status', status: 502 })
  assert.equal((await t.cache.getNarInfo(a.hashPart)).kind, 'unavailable')
  assert.ok(t.upstreams[0].isDown, 'the upstream was not marked down after reaching failureThreshold')
  up.server.fault = undefined
  const before = up.server.requests.length
  assert.equal((await t.cache.getNarInfo(b.hashPart)).kind, 'unavailable', 'a path behind a down upstream was answered as absent')
  assert.equal(up.server.requests.length, before, 'a down upstream was still asked')
})

test('concurrent requests for one narinfo share one upstream request', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('popular-1.0', 'x\n', up.key)
  await addToCache(up.dir, p)

  up.server.fault = () => ({ kind: 'delayHeaders', ms: 200 })
  const answers = await Promise.all(Array.from({ length: 20 }, () => t!.cache.getNarInfo(p.hashPart)))
  assert.ok(answers.every((a) => a.kind === 'found' && a.text === (answers[0] as { text: string }).text))
  assert.equal(up.server.count(`/${p.hashPart}.narinfo`), 1, '20 concurrent requests were not coalesced into one upstream request')
  const audit = await t.auditEntries()
  assert.equal(audit.length, 1, 'one path was admitted more than once')
})

test('a higher-priority upstream that cannot be asked shadows a lower one: unavailable, not the lower copy', async () => {
  t = await startCache({ upstreams: ['first', 'second'], upstream: { failureThreshold: 100 } })
  const [first, second] = t.fakes
  const p = fakePath('shadowed-1.0', 'x\n', second.key)
  await addToCache(second.dir, p)

  first.server.fault = () => ({ kind: 'status', status: 503 })
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'unavailable', 'the lower-priority copy was admitted while the first upstream was unreachable')
  first.server.fault = undefined
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
})
