/**
 * NAR prefetch (`prefetch.nars`): a NAR downloaded ahead of the client goes through the same
 * verification as a client's download, so a bad one is never served and is audited like any
 * other; and prefetch stays within its bounds, however large the closure. Fake upstreams (the
 * static server) and a real Store in a temporary directory.
 */
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, afterEach, test } from 'node:test'
import { Writable } from 'node:stream'
import { stopVerifyThreads } from '../../src/store/index.js'
import { addToCache, fakePath, startCache, type CacheUnderTest, type FakePath } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})
after(() => stopVerifyThreads())

async function until(check: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(what)
    await sleep(20)
  }
}

/** A Writable that keeps what it is given. */
function collector(): Writable & { bytes(): Buffer } {
  const chunks: Buffer[] = []
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk)
      cb()
    },
  }) as Writable & { bytes(): Buffer }
  w.bytes = () => Buffer.concat(chunks)
  return w
}

const narRequests = (t: CacheUnderTest) => t.fakes[0].server.requests.filter((r) => r.url.startsWith('/nar/')).length

test('a prefetched NAR that fails verification is never served, and is audited and counted like any failed download', async () => {
  t = await startCache({ settings: { prefetchNars: true } })
  const [up] = t.fakes
  const p = fakePath('bad-prefetch', 'the real contents\n', up.key)
  const flipped = Buffer.from(p.nar)
  // A byte of the file's contents: the NAR still parses, its hash is wrong.
  flipped[flipped.indexOf('real')] ^= 1
  await addToCache(up.dir, p, { nar: flipped })

  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
  await until(async () => (await t!.auditEntries()).some((e) => e.decision === 'nar-rejected'), 'the failed prefetch was not audited')
  const rejected = (await t.auditEntries()).filter((e) => e.decision === 'nar-rejected')
  assert.equal(rejected.length, 1)
  assert.equal(rejected[0].storePath, p.storePath)
  assert.equal(rejected[0].reason, 'HASH_MISMATCH')
  assert.equal(await t.store.getNarFile(p.fileName), undefined, 'the bad NAR was stored')
  const metrics = await t.metrics.registry.metrics()
  assert.match(metrics, /narthex_nar_verification_failures_total\{upstream="up-1",code="HASH_MISMATCH"\} 1/)

  // The client's request: the source just failed verification, so no bad byte is sent.
  const answer = await t.cache.getNar(p.fileName)
  if (answer.kind === 'following') {
    const out = collector()
    await assert.rejects(answer.follower.sendTo(out))
    assert.ok(!out.bytes().equals(flipped), 'the bad NAR reached a client complete')
  } else assert.equal(answer.kind, 'unavailable')
  assert.doesNotMatch(await t.metrics.registry.metrics(), /narthex_prefetched_bytes_total\{used="(yes|no)"\} [1-9]/, 'a failed prefetch is no prefetched bytes')
})

test('prefetch never runs more than maxBytesAhead ahead of the client, and resumes as the client catches up', async () => {
  const PATHS = 30
  const size = fakePath('ahead-0', 'x'.repeat(10_000)).nar.length
  const budget = 4 * size + size / 2
  t = await startCache({ settings: { prefetchNars: true, prefetchMaxBytesAhead: budget, prefetchMaxNarsInFlight: 3 } })
  const [up] = t.fakes
  const paths: FakePath[] = []
  for (let i = 0; i < PATHS; i++) {
    const p = fakePath(`ahead-${i}`, String(i % 10).repeat(10_000 - String(i).length) + String(i), up.key)
    assert.equal(p.nar.length, size)
    await addToCache(up.dir, p)
    paths.push(p)
  }
  // The client queries the whole closure first, as nix does.
  for (const p of paths) assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
  await until(() => narRequests(t!) >= 4, 'prefetch did not start')
  await sleep(500)
  assert.equal(narRequests(t), 4, `${narRequests(t)} NARs of ${size} bytes were prefetched with a budget of ${budget} bytes`)
  assert.ok(t.cache.prefetchFigures.bytesAhead <= budget)

  // The client asks for the first two: the budget they held goes to the next ones.
  for (const p of paths.slice(0, 2)) {
    const answer = await t.cache.getNar(p.fileName)
    if (answer.kind === 'following') await answer.follower.completed()
    else assert.equal(answer.kind, 'stored')
  }
  await until(() => narRequests(t!) >= 6, 'prefetch did not resume as the client caught up')
  await sleep(300)
  assert.equal(narRequests(t), 6)
  const metrics = await t.metrics.registry.metrics()
  assert.match(metrics, new RegExp(`narthex_prefetched_bytes_total\\{used="yes"\\} ${2 * size}\\b`))
  for (const p of paths) assert.equal(t.fakes[0].server.count(`/${p.info.url}`) <= 1, true, 'a NAR was downloaded twice')
})

test('prefetch leaves room under storage.maxSize: it does not download what would fill the store past its limit', async () => {
  const size = fakePath('quota-0', 'q'.repeat(10_000)).nar.length
  t = await startCache({ settings: { prefetchNars: true, maxStoreBytes: 2 * size + 10 } })
  const [up] = t.fakes
  const paths: FakePath[] = []
  for (let i = 0; i < 5; i++) {
    const p = fakePath(`quota-${i}`, String(i).repeat(10_000), up.key)
    await addToCache(up.dir, p)
    paths.push(p)
  }
  for (const p of paths) assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
  await until(() => narRequests(t!) >= 2, 'prefetch did not start')
  await sleep(500)
  assert.equal(narRequests(t), 2, 'prefetch filled the store past storage.maxSize')
})
