/**
 * NAR fetching through the Cache facade, against fake upstreams (the static server) and a real
 * Store in a temporary directory, with the real verification threads. Each test names what broke
 * when it fails.
 */
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, afterEach, test } from 'node:test'
import type { NarAnswer } from '../../src/cache/index.js'
import { isNarthexError } from '../../src/errors.js'
import { formatNixHash, parseNarInfo } from '../../src/protocol/index.js'
import { stopVerifyThreads } from '../../src/store/index.js'
import { writeNar } from '../helpers/nar-writer.js'
import { addToCache, fakePath, startCache, type CacheUnderTest } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})
after(() => stopVerifyThreads())

/** A Writable that keeps a copy of what it is sent (the sender reuses its buffers once written). */
function collector(): Writable & { bytes(): Buffer } {
  const chunks: Buffer[] = []
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk))
      cb()
    },
  })
  return Object.assign(w, { bytes: () => Buffer.concat(chunks) })
}

/** Sends a NAR answer to a collector: the bytes a client got, or the error that cut it off. */
async function receive(answer: NarAnswer): Promise<{ bytes: Buffer } | { error: unknown }> {
  if (answer.kind === 'stored') return { bytes: await readFile(answer.path) }
  assert.equal(answer.kind, 'following', `expected a NAR, got ${JSON.stringify(answer)}`)
  if (answer.kind !== 'following') throw new Error('unreachable')
  const out = collector()
  try {
    await answer.follower.sendTo(out)
    await answer.follower.completed()
    return { bytes: out.bytes() }
  } catch (error) {
    return { error }
  }
}

/** The NAR file names in the store's nar/ and tmp/ directories. */
async function filesOnDisk(dataDir: string): Promise<{ nar: string[]; tmp: string[] }> {
  const nar: string[] = []
  for (const shard of await readdir(join(dataDir, 'nar'))) nar.push(...(await readdir(join(dataDir, 'nar', shard)).catch(() => [])))
  return { nar, tmp: await readdir(join(dataDir, 'tmp')) }
}

test('a NAR is downloaded once, verified, stored, and served from the store afterwards', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('stored-1.0', 'the contents\n'.repeat(1000), up.key)
  await addToCache(up.dir, p)
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')

  const got = await receive(await t.cache.getNar(p.fileName))
  assert.ok('bytes' in got, `the client was cut off: ${'error' in got ? String(got.error) : ''}`)
  assert.ok(got.bytes.equals(p.nar), 'the client got other bytes than the NAR')
  const record = await t.store.getNarFile(p.fileName)
  assert.equal(record?.narHash, formatNixHash(p.info.narHash), 'the verified NAR was not indexed')
  const again = await t.cache.getNar(p.fileName)
  assert.equal(again.kind, 'stored', 'a stored NAR was not served from the store')
  assert.ok((await readFile((again as { path: string }).path)).equals(p.nar), 'the stored file is not the NAR')
  assert.equal(up.server.count(`/${p.info.url}`), 1, 'the NAR was downloaded twice')

  // The narinfo served from now on carries the stored file's hash and size.
  const served = await t.cache.getNarInfo(p.hashPart)
  const info = served.kind === 'found' ? parseNarInfo(served.text) : undefined
  assert.equal(info?.fileSize, p.nar.length, 'the served narinfo lost the stored FileSize')
})

test('concurrent requests for one NAR share one download', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('shared-1.0', 'y'.repeat(200_000), up.key)
  await addToCache(up.dir, p)
  await t.cache.getNarInfo(p.hashPart)

  up.server.fault = () => ({ kind: 'trickle', bytesPerSecond: 2_000_000 })
  const answers = await Promise.all(Array.from({ length: 8 }, () => t!.cache.getNar(p.fileName)))
  const got = await Promise.all(answers.map(receive))
  assert.ok(got.every((g) => 'bytes' in g && g.bytes.equals(p.nar)), 'a client of a shared download got other bytes')
  assert.equal(up.server.count(`/${p.info.url}`), 1, '8 concurrent NAR requests started more than one download')
})

test('a NAR whose bytes do not match the signed NarHash is never stored; its source is skipped and the next source serves it', async () => {
  t = await startCache({ upstreams: ['bad', 'good'] })
  const [bad, good] = t.fakes
  const p = fakePath('tampered-1.0', 'hello world\n'.repeat(20_000), bad.key)
  // Same length, other contents: only NarHash verification can tell.
  const forged = writeNar({ type: 'regular', contents: 'jello world\n'.repeat(20_000) })
  assert.equal(forged.length, p.nar.length)
  await addToCache(bad.dir, p, { nar: forged })
  await addToCache(good.dir, p)
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')

  // Sent slowly, so the first client is surely following the download before the hash is known.
  bad.server.fault = () => ({ kind: 'trickle', bytesPerSecond: 1_000_000 })
  const first = await receive(await t.cache.getNar(p.fileName))
  assert.ok('error' in first, 'the first client got the forged NAR whole')
  assert.ok(isNarthexError(first.error, 'HASH_MISMATCH'), `the forged NAR failed with ${String(first.error)}, not HASH_MISMATCH`)
  assert.deepEqual(await filesOnDisk(t.dataDir), { nar: [], tmp: [] }, 'a NAR that failed verification was left on disk')
  assert.equal(await t.store.getNarFile(p.fileName), undefined, 'a NAR that failed verification was indexed')

  const second = await receive(await t.cache.getNar(p.fileName))
  assert.ok('bytes' in second && second.bytes.equals(p.nar), 'the next request did not get the NAR from the good source')
  assert.equal(bad.server.count(`/${p.info.url}`), 1, 'the source that served bad bytes was asked again')
  assert.equal(good.server.count(`/${p.info.url}`), 1)
  assert.ok((await readFile(t.store.narPath(p.fileName))).equals(p.nar), 'the stored file is not the genuine NAR')
  assert.equal(t.upstreams[0].health().consecutiveFailures, 1, 'bad bytes did not count against the upstream that sent them')
  const rejected = (await t.auditEntries()).filter((e) => e.decision === 'nar-rejected')
  assert.deepEqual(
    rejected.map((e) => [e.storePath, e.upstreams, e.reason]),
    [[p.storePath, ['bad'], 'HASH_MISMATCH']],
    'the rejected NAR was not audited against its upstream',
  )
})

test('with only a source of bad bytes, the NAR is unavailable (503, not 404) and nothing is left on disk', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('only-bad-1.0', 'hello world\n', up.key)
  await addToCache(up.dir, p, { nar: writeNar({ type: 'regular', contents: 'jello world\n' }) })
  await t.cache.getNarInfo(p.hashPart)

  const first = await t.cache.getNar(p.fileName)
  if (first.kind === 'following') {
    const got = await receive(first)
    assert.ok('error' in got && isNarthexError(got.error, 'HASH_MISMATCH'), 'a NAR that failed verification reached the client whole')
  } else assert.equal(first.kind, 'unavailable')
  assert.deepEqual(await filesOnDisk(t.dataDir), { nar: [], tmp: [] }, 'a NAR that failed verification left a file behind')
  assert.equal((await t.cache.getNar(p.fileName)).kind, 'unavailable', 'a NAR whose only source sent bad bytes was answered as absent')
  assert.equal(up.server.count(`/${p.info.url}`), 1, 'the bad source was retried at once')
})

test('failover: when the first source no longer has the NAR (404), the next one serves it to the same request', async () => {
  t = await startCache({ upstreams: ['first', 'second'] })
  const [first, second] = t.fakes
  const p = fakePath('failover-1.0', 'z'.repeat(5000), first.key)
  await addToCache(first.dir, p, { narFile: false })
  await addToCache(second.dir, p)
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')

  const got = await receive(await t.cache.getNar(p.fileName))
  assert.ok('bytes' in got && got.bytes.equals(p.nar), 'a 404 from the first source was not failed over to the second')
  assert.equal(first.server.count(`/${p.info.url}`), 1)
  assert.equal(second.server.count(`/${p.info.url}`), 1)
  assert.equal(t.upstreams[0].health().consecutiveFailures, 0, 'a missing NAR counted against the upstream\'s health')
})

test('a NAR no source has is absent (404); one whose sources failed transiently is unavailable (503)', async () => {
  t = await startCache({ upstreams: ['first', 'second'], upstream: { failureThreshold: 100 } })
  const [first, second] = t.fakes
  const gone = fakePath('gone-1.0', 'g\n', first.key)
  const flaky = fakePath('flaky-nar-1.0', 'f\n', first.key)
  for (const p of [gone, flaky]) {
    await addToCache(first.dir, p, { narFile: false })
    await addToCache(second.dir, p, { narFile: false })
    assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found')
  }
  assert.deepEqual(await t.cache.getNar(gone.fileName), { kind: 'absent' })

  second.server.fault = (req) => (req.url?.startsWith('/nar/') ? { kind: 'status', status: 500 } : undefined)
  const answer = await t.cache.getNar(flaky.fileName)
  assert.equal(answer.kind, 'unavailable', 'a NAR whose source answered 500 was answered as absent')
})

test('a NAR file name narthex never admitted is absent without asking any upstream', async () => {
  t = await startCache()
  const [up] = t.fakes
  const p = fakePath('never-admitted-1.0', 'n\n', up.key)
  await addToCache(up.dir, p)
  assert.deepEqual(await t.cache.getNar(p.fileName), { kind: 'absent' })
  assert.deepEqual(await t.cache.getNar('not-a-nar-name'), { kind: 'absent' })
  assert.equal(up.server.requests.length, 0, 'a NAR request for an unadmitted file reached an upstream')
})
