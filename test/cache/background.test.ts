/**
 * The work the Cache does besides answering: prefetching the references of admitted paths, and
 * evicting NARs when the store grows past its limit. Fake upstreams (the static server) and a
 * real Store in a temporary directory. Each test names what broke when it fails.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, afterEach, test } from 'node:test'
import type { NarAnswer } from '../../src/cache/index.js'
import { stopVerifyThreads } from '../../src/store/index.js'
import { addToCache, baseOf, fakePath, startCache, type CacheUnderTest } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})
after(() => stopVerifyThreads())

/** Waits until `check` holds, failing with `what` after `ms`. */
async function until(check: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(what)
    await sleep(20)
  }
}

/** Waits for a NAR answer to be complete in the store. */
async function finish(answer: NarAnswer): Promise<void> {
  if (answer.kind === 'following') await answer.follower.completed()
  else assert.equal(answer.kind, 'stored', `expected a NAR, got ${answer.kind}`)
}

test('prefetch: references are admitted ahead of the client; a NAR is downloaded once a client is served its narinfo from a miss', async () => {
  t = await startCache({ settings: { prefetchReferences: true, prefetchNars: true } })
  const [up] = t.fakes
  const dep = fakePath('dep-1.0', 'dependency\n', up.key)
  const top = fakePath('top-1.0', 'top\n', up.key, [baseOf(dep)])
  await addToCache(up.dir, dep)
  await addToCache(up.dir, top)

  assert.equal((await t.cache.getNarInfo(top.hashPart)).kind, 'found')
  await until(async () => (await t!.store.getNarFile(top.fileName)) !== undefined, 'the NAR of a path whose narinfo a client was served was not prefetched')
  await until(async () => (await t!.store.getNarInfo(dep.hashPart)) !== undefined, 'a reference was not admitted ahead of the client')
  await sleep(100)
  assert.equal(up.server.count(`/${dep.info.url}`), 0, 'the NAR of a reference no client was served yet was downloaded')
  assert.equal((await t.cache.getNarInfo(dep.hashPart)).kind, 'found')
  assert.equal(up.server.count(`/${dep.hashPart}.narinfo`), 1, 'a prefetched narinfo was looked up again for the client')
  await until(async () => (await t!.store.getNarFile(dep.fileName)) !== undefined, 'the reference\'s NAR was not prefetched once its narinfo was served')
  // The client's NAR requests are then answered from the store, each NAR downloaded once.
  for (const p of [top, dep]) {
    assert.equal((await t.cache.getNar(p.fileName)).kind, 'stored')
    assert.equal(up.server.count(`/${p.info.url}`), 1)
  }
})

test('prefetch off: nothing but what the client asks for reaches the upstream', async () => {
  t = await startCache({ settings: { prefetchReferences: false } })
  const [up] = t.fakes
  const dep = fakePath('dep-2.0', 'dependency\n', up.key)
  const top = fakePath('top-2.0', 'top\n', up.key, [baseOf(dep)])
  await addToCache(up.dir, dep)
  await addToCache(up.dir, top)
  await t.cache.getNarInfo(top.hashPart)
  await sleep(300)
  assert.equal(up.server.count(`/${dep.hashPart}.narinfo`), 0, 'a reference was looked up with prefetch off')
})

test('GC: past maxStoreBytes the least recently used NAR is evicted, and a later request downloads it again rather than pointing at the gone file', async () => {
  const size = fakePath('gc-a', 'a'.repeat(10_000)).nar.length
  // Room for one NAR, not two.
  t = await startCache({ settings: { maxStoreBytes: 2 * size - 1 } })
  const [up] = t.fakes
  const sa = fakePath('gc-a', 'a'.repeat(10_000), up.key)
  const sb = fakePath('gc-b', 'b'.repeat(10_000), up.key)
  assert.equal(sb.nar.length, size)
  await addToCache(up.dir, sa)
  await addToCache(up.dir, sb)
  await t.cache.getNarInfo(sa.hashPart)
  await t.cache.getNarInfo(sb.hashPart)

  await finish(await t.cache.getNar(sa.fileName))
  await sleep(20)
  await finish(await t.cache.getNar(sb.fileName))
  await until(async () => (await t!.store.getNarFile(sa.fileName)) === undefined, 'the store grew past maxStoreBytes and nothing was evicted')
  assert.ok((await t.store.getNarFile(sb.fileName)) !== undefined, 'the most recently used NAR was evicted instead of the older one')

  // Within the window where a finished download still takes late joiners.
  const again = await t.cache.getNar(sa.fileName)
  if (again.kind === 'stored') assert.fail('an evicted NAR was answered from the store (its finished download still lingered)')
  await finish(again)
  assert.ok((await readFile(t.store.narPath(sa.fileName))).equals(sa.nar))
  assert.equal(up.server.count(`/${sa.info.url}`), 2, 'the evicted NAR was not downloaded again')
})
