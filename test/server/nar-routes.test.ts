/**
 * The two NAR URL forms over real HTTP: narinfos name `nar/<hashPart>/<fileName>`,
 * the flat `nar/<fileName>` of narinfos served before keeps working, and the hash
 * part lets a node that has never seen the path (a balancer sent it the NAR
 * request only) resolve the narinfo first, never serving another path's NAR.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseNarInfo } from '../../src/protocol/index.js'
import { addToCache, fakePath } from '../helpers/fake-cache.js'
import { servedCaches } from '../helpers/served-cache.js'

/** A narthex HTTP server over a fresh cache with one fake upstream, closed after each test. */
const { serve, cache } = servedCaches()

test('the served narinfo names the NAR under the path\'s hash part, and both URL forms serve it for GET and HEAD', async () => {
  const base = await serve()
  const p = fakePath('routes-1.0', 'hello\n'.repeat(50), cache().fakes[0].key)
  await addToCache(cache().fakes[0].dir, p)
  const info = parseNarInfo(await (await fetch(`${base}/${p.hashPart}.narinfo`)).text())
  assert.equal(info.url, `nar/${p.hashPart}/${p.fileName}`)
  for (const url of [`${base}/${info.url}`, `${base}/nar/${p.fileName}`]) {
    const got = await fetch(url)
    assert.equal(got.status, 200, url)
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(p.nar), `${url} did not serve the path's NAR`)
    const head = await fetch(url, { method: 'HEAD' })
    assert.equal(head.status, 200, `HEAD ${url}`)
    assert.equal(head.headers.get('content-length'), String(p.nar.length))
  }
})

test('a NAR asked for by hash part on a node that never saw the path resolves its narinfo first', async () => {
  const base = await serve()
  const p = fakePath('routes-cold-1.0', 'cold\n'.repeat(80), cache().fakes[0].key)
  await addToCache(cache().fakes[0].dir, p)
  // No narinfo request here: another node answered it.
  const flat = await fetch(`${base}/nar/${p.fileName}`)
  assert.equal(flat.status, 404, 'the flat URL has no path to resolve: this node knows nothing of the file')
  await flat.arrayBuffer()
  const head = await fetch(`${base}/nar/${p.hashPart}/${p.fileName}`, { method: 'HEAD' })
  assert.equal(head.status, 200, 'HEAD of the hinted URL did not resolve the path')
  const got = await fetch(`${base}/nar/${p.hashPart}/${p.fileName}`)
  assert.equal(got.status, 200)
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(p.nar))
  assert.equal(cache().fakes[0].server.count(`/${p.hashPart}.narinfo`), 1, 'the narinfo was not asked for once')
  assert.equal((await cache().store.getNarInfo(p.hashPart))?.origin, 'up-1', 'the path was not admitted through the normal resolve path')
})

test('a hash part whose narinfo has another NarHash is a 404, even when that file is stored', async () => {
  const base = await serve()
  const a = fakePath('routes-a-1.0', 'aaa\n'.repeat(40), cache().fakes[0].key)
  const b = fakePath('routes-b-1.0', 'bbb\n'.repeat(40), cache().fakes[0].key)
  await addToCache(cache().fakes[0].dir, a)
  await addToCache(cache().fakes[0].dir, b)
  for (const p of [a, b]) {
    const info = parseNarInfo(await (await fetch(`${base}/${p.hashPart}.narinfo`)).text())
    assert.equal((await fetch(`${base}/${info.url}`).then((r) => r.arrayBuffer())).byteLength, p.nar.length)
  }
  for (const method of ['GET', 'HEAD']) {
    const crossed = await fetch(`${base}/nar/${a.hashPart}/${b.fileName}`, { method })
    assert.equal(crossed.status, 404, `${method} of path a's hash part served path b's NAR`)
    await crossed.arrayBuffer()
  }
  const unknown = fakePath('routes-unknown-1.0', 'nobody has it\n')
  const absent = await fetch(`${base}/nar/${unknown.hashPart}/${a.fileName}`)
  assert.equal(absent.status, 404, 'a hash part no upstream has served a stored NAR')
  await absent.arrayBuffer()
})
