/**
 * What the NAR fetcher does when the sources recorded at admission fail: it asks the upstreams
 * again for new sources of the admitted fingerprint, and it switches to another compression when
 * every source of the served one sent bad bytes. Fake upstreams (the static server) and a real
 * Store in a temporary directory. Each test names what broke when it fails.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, afterEach, test } from 'node:test'
import type { NarAnswer } from '../../src/cache/index.js'
import { parseNarInfo } from '../../src/protocol/index.js'
import { stopVerifyThreads } from '../../src/store/index.js'
import { addToCache, fakePath, startCache, type CacheUnderTest, type FakePath } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})
after(() => stopVerifyThreads())

/** Waits for a NAR answer to be complete; false when the client was cut off. */
async function completes(answer: NarAnswer): Promise<boolean> {
  if (answer.kind === 'stored') return true
  assert.equal(answer.kind, 'following', `expected a NAR, got ${JSON.stringify(answer)}`)
  if (answer.kind !== 'following') return false
  return answer.follower.completed().then(
    () => true,
    () => false,
  )
}

test('an upstream that could not be asked at admission becomes a source once every recorded source failed', async () => {
  t = await startCache({ upstreams: ['first', 'second'], upstream: { failureThreshold: 100 } })
  const [first, second] = t.fakes
  const p = fakePath('late-source-1.0', 'late\n'.repeat(100), first.key)
  await addToCache(first.dir, p, { narFile: false })
  await addToCache(second.dir, p)

  // The lower-priority upstream is down at admission: the path is admitted from the first alone.
  second.server.fault = () => ({ kind: 'status', status: 500 })
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
  assert.deepEqual((await t.store.getNarInfo(p.hashPart))?.sources.map((s) => s.upstream), ['first'])
  second.server.fault = undefined

  assert.ok(await completes(await t.cache.getNar(p.fileName)), 'the NAR was not fetched from the upstream found on refresh')
  assert.ok((await readFile(t.store.narPath(p.fileName))).equals(p.nar))
  assert.deepEqual(
    (await t.store.getNarInfo(p.hashPart))?.sources.map((s) => s.upstream),
    ['first', 'second'],
    'the source found on refresh was not recorded',
  )
})

test('when every source of the served compression sends bad bytes, the narinfo switches to a source in another compression', async () => {
  t = await startCache({ upstreams: ['first', 'second'] })
  const [first, second] = t.fakes
  const p = fakePath('recompressed-1.0', 'payload\n'.repeat(100), first.key)
  // The first upstream claims zstd (an unsigned field) but its file is no zstd stream.
  const zstdName = p.fileName.replace(/\.nar$/, '.nar.zst')
  const claimed: FakePath = { ...p, info: { ...p.info, compression: 'zstd', url: `nar/${zstdName}`, fileHash: undefined, fileSize: undefined } }
  await addToCache(first.dir, claimed, { nar: Buffer.from('not zstd at all') })
  await addToCache(second.dir, p)

  const admitted = await t.cache.getNarInfo(p.hashPart)
  assert.equal(admitted.kind === 'found' && parseNarInfo(admitted.text).url, `nar/${p.hashPart}/${zstdName}`)
  // The bad bytes are found after the first client started following (it is cut off), or at once.
  const answer = await t.cache.getNar(zstdName)
  if (answer.kind === 'following') {
    assert.equal(await completes(answer), false, 'a file that is not zstd was served as a complete NAR')
    assert.deepEqual(await t.cache.getNar(zstdName), { kind: 'unavailable', retryAfterS: 1 }, 'the record did not switch compression')
  } else assert.deepEqual(answer, { kind: 'unavailable', retryAfterS: 1 }, 'the record did not switch compression')

  const switched = await t.cache.getNarInfo(p.hashPart)
  assert.ok(switched.kind === 'found', 'the switched narinfo is not served')
  const info = parseNarInfo(switched.text)
  assert.equal(info.url, `nar/${p.hashPart}/${p.fileName}`, 'the narinfo served after the switch still names the bad file')
  assert.equal(info.compression, 'none')
  assert.ok(await completes(await t.cache.getNar(p.fileName)), 'the NAR in the other compression was not fetched')
  assert.ok((await readFile(t.store.narPath(p.fileName))).equals(p.nar))
  assert.equal(first.server.count(`/nar/${zstdName}`), 1, 'the source that sent bad bytes was asked again')
})
