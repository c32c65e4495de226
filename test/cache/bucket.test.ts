/**
 * The bucket tier in-process, against a real S3 server (Swift): what an
 * admission writes there, what a node with an empty data directory serves from
 * there, what two nodes offered different NarHashes end up serving, and pushes.
 */
import assert from 'node:assert/strict'
import { readFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import type { NarAnswer } from '../../src/cache/index.js'
import { formatNarInfo, formatNixHash, generateSecretKey, parseNarInfo, signNarInfo, toPublicKey, validSignatures } from '../../src/protocol/index.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'
import { addToCache, fakePath } from '../helpers/fake-cache.js'
import { locationOn, removeNode, startFakes, startNode, type BucketNode, type Fake } from './bucket-node.js'

const skip = s3SkipReason()

async function receive(answer: NarAnswer): Promise<Buffer> {
  if (answer.kind === 'stored') return readFile(answer.path)
  if (answer.kind !== 'following') throw new Error(`expected a NAR, got ${JSON.stringify(answer)}`)
  const chunks: Buffer[] = []
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk))
      cb()
    },
  })
  await answer.follower.sendTo(out)
  await answer.follower.completed()
  return Buffer.concat(chunks)
}

async function objectText(client: S3Client, bucket: string, key: string): Promise<string | undefined> {
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
    return await out.Body!.transformToString('utf8')
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined
    throw err
  }
}

async function objectSize(client: S3Client, bucket: string, key: string): Promise<number | undefined> {
  try {
    return (await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ContentLength
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined
    throw err
  }
}

describe('nodes sharing a bucket', { skip }, () => {
  let server: S3TestServer
  let client: S3Client
  let root: string
  let bucketCount = 0
  const nodes: BucketNode[] = []
  const allFakes: Fake[] = []
  const key = generateSecretKey('narthex-shared')

  before(async () => {
    server = await startS3Server()
    client = await server.client()
    root = await mkdtemp(join(tmpdir(), 'narthex-bucket-test-'))
  })
  after(async () => {
    for (const n of nodes) await n.close().catch(() => undefined)
    for (const n of nodes) await removeNode(n)
    await Promise.all(allFakes.map((f) => f.server.close()))
    await server?.stop()
    if (root) await rm(root, { recursive: true, force: true })
  })

  async function fresh(names: string[] = ['up-1']): Promise<{ bucket: string; fakes: Fake[] }> {
    const bucket = `narthex-${++bucketCount}`
    await server.createBucket(bucket)
    const fakes = await startFakes(join(root, bucket), names)
    allFakes.push(...fakes)
    return { bucket, fakes }
  }

  async function node(bucket: string, fakes: readonly Fake[], extra: Partial<Parameters<typeof startNode>[0]> = {}): Promise<BucketNode> {
    const n = await startNode({ fakes, location: locationOn(server, bucket, 'cache/'), key, ...extra })
    nodes.push(n)
    return n
  }

  test('an admission writes narthex\'s signed narinfo to the bucket before serving it, and the verified NAR after', async () => {
    const { bucket, fakes } = await fresh()
    const path = fakePath('bucket-admit', 'hello bucket', fakes[0].key)
    await addToCache(fakes[0].dir, path)
    const a = await node(bucket, fakes)
    const answer = await a.cache.getNarInfo(path.hashPart)
    assert.equal(answer.kind, 'found')
    const text = await objectText(client, bucket, `cache/${path.hashPart}.narinfo`)
    assert.ok(text, 'the narinfo is in the bucket')
    const info = parseNarInfo(text)
    assert.equal(info.url, `nar/${path.fileName}`)
    assert.equal(formatNixHash(info.narHash), formatNixHash(path.info.narHash))
    assert.equal(validSignatures(info, [toPublicKey(key)]).length, 1, "signed by narthex's key")
    assert.equal(await objectSize(client, bucket, `cache/nar/${path.fileName}`), undefined, 'no NAR before it was fetched')
    assert.deepEqual(await receive(await a.cache.getNar(path.fileName)), path.nar)
    await a.uploads.idle()
    assert.equal(await objectSize(client, bucket, `cache/nar/${path.fileName}`), path.nar.length)
    assert.equal(a.uploads.figures.pending, 0)
    assert.equal(a.uploads.figures.uploadedBytes, path.nar.length)
  })

  test('a NAR that fails verification never becomes an object', async () => {
    const { bucket, fakes } = await fresh()
    const path = fakePath('bucket-bad-nar', 'the real contents', fakes[0].key)
    await addToCache(fakes[0].dir, path, { nar: fakePath('other', 'forged contents!!').nar })
    const a = await node(bucket, fakes)
    assert.equal((await a.cache.getNarInfo(path.hashPart)).kind, 'found')
    await assert.rejects(receive(await a.cache.getNar(path.fileName)))
    await a.uploads.idle()
    assert.equal(await objectSize(client, bucket, `cache/nar/${path.fileName}`), undefined)
    assert.equal(a.uploads.figures.uploadedFiles, 0)
  })

  test('a node with an empty data directory serves the narinfo and the NAR from the bucket without asking the upstream', async () => {
    const { bucket, fakes } = await fresh()
    const path = fakePath('bucket-restart', 'served after a restart', fakes[0].key)
    await addToCache(fakes[0].dir, path)
    const a = await node(bucket, fakes)
    const first = await a.cache.getNarInfo(path.hashPart)
    await receive(await a.cache.getNar(path.fileName))
    await a.uploads.idle()
    await a.close()
    fakes[0].server.requests.length = 0
    const b = await node(bucket, fakes)
    const again = await b.cache.getNarInfo(path.hashPart)
    assert.equal(again.kind, 'found')
    assert.equal(first.kind, 'found')
    if (again.kind !== 'found' || first.kind !== 'found') return
    assert.equal(formatNixHash(parseNarInfo(again.text).narHash), formatNixHash(path.info.narHash))
    assert.deepEqual(await receive(await b.cache.getNar(path.fileName)), path.nar)
    assert.deepEqual(fakes[0].server.requests, [], 'the upstream was not asked')
    const stored = await b.store.getNarInfo(path.hashPart)
    assert.equal(stored?.origin, 'bucket')
    assert.ok(await b.store.getNarFile(path.fileName), 'the NAR is cached locally now')
  })

  test('a NAR the bucket lacks yet (its upload not done) comes from the upstream', async () => {
    const { bucket, fakes } = await fresh()
    const path = fakePath('bucket-not-uploaded', 'not uploaded yet', fakes[0].key)
    await addToCache(fakes[0].dir, path)
    const a = await node(bucket, fakes)
    assert.equal((await a.cache.getNarInfo(path.hashPart)).kind, 'found')
    const b = await node(bucket, fakes)
    assert.equal((await b.cache.getNarInfo(path.hashPart)).kind, 'found')
    assert.equal((await b.store.getNarInfo(path.hashPart))?.origin, 'bucket')
    assert.deepEqual(await receive(await b.cache.getNar(path.fileName)), path.nar)
    assert.equal(fakes[0].server.count(`/nar/${path.fileName}`), 1)
  })

  test('two nodes offered different NarHashes for one path both serve the one pinned first (onConflict: priority)', async () => {
    const { bucket, fakes } = await fresh(['up-1', 'up-2'])
    const one = fakePath('bucket-race', 'version one', fakes[0].key)
    const two = fakePath('bucket-race', 'version two', fakes[1].key)
    assert.equal(one.hashPart, two.hashPart)
    await addToCache(fakes[0].dir, one)
    await addToCache(fakes[1].dir, two)
    const a = await node(bucket, [fakes[0]])
    const b = await node(bucket, [fakes[1]])
    const [ra, rb] = await Promise.all([a.cache.getNarInfo(one.hashPart), b.cache.getNarInfo(two.hashPart)])
    assert.equal(ra.kind, 'found')
    assert.equal(rb.kind, 'found')
    if (ra.kind !== 'found' || rb.kind !== 'found') return
    const pinned = parseNarInfo((await objectText(client, bucket, `cache/${one.hashPart}.narinfo`))!).narHash
    assert.equal(formatNixHash(parseNarInfo(ra.text).narHash), formatNixHash(pinned))
    assert.equal(formatNixHash(parseNarInfo(rb.text).narHash), formatNixHash(pinned))
    const loser = formatNixHash(pinned) === formatNixHash(one.info.narHash) ? b : a
    const conflicts = (await loser.auditEntries()).filter((e) => e.decision === 'conflict')
    assert.equal(conflicts.length, 1, 'the node that lost the race audited the conflict')
  })

  test('under onConflict: refuse the node that lost the race refuses the path', async () => {
    const { bucket, fakes } = await fresh(['up-1', 'up-2'])
    const one = fakePath('bucket-race-refuse', 'version one', fakes[0].key)
    const two = fakePath('bucket-race-refuse', 'version two', fakes[1].key)
    await addToCache(fakes[0].dir, one)
    await addToCache(fakes[1].dir, two)
    const rules = (name: string) => [{ match: ['*'], upstreams: [name], minSignatures: 1, onConflict: 'refuse' as const }]
    const a = await node(bucket, [fakes[0]], { rules: rules('up-1') })
    const b = await node(bucket, [fakes[1]], { rules: rules('up-2') })
    const answers = await Promise.all([a.cache.getNarInfo(one.hashPart), b.cache.getNarInfo(two.hashPart)])
    const found = answers.filter((x) => x.kind === 'found')
    const pinned = formatNixHash(parseNarInfo((await objectText(client, bucket, `cache/${one.hashPart}.narinfo`))!).narHash)
    for (const f of found) if (f.kind === 'found') assert.equal(formatNixHash(parseNarInfo(f.text).narHash), pinned)
    // Both may have seen the pin (one by creating it); never two NarHashes.
    assert.ok(found.length >= 1)
    if (found.length === 1) {
      const loser = answers[0].kind === 'found' ? b : a
      const refusals = (await loser.auditEntries()).filter((e) => e.decision === 'refuse' && e.reason === 'CONFLICT')
      assert.equal(refusals.length, 1)
    }
  })

  test('a node follows the bucket after a local miss, over what its own upstream offers', async () => {
    const { bucket, fakes } = await fresh(['up-1', 'up-2'])
    const one = fakePath('bucket-follow', 'first admitted', fakes[0].key)
    const two = fakePath('bucket-follow', 'offered later', fakes[1].key)
    await addToCache(fakes[0].dir, one)
    await addToCache(fakes[1].dir, two)
    const a = await node(bucket, [fakes[0]])
    assert.equal((await a.cache.getNarInfo(one.hashPart)).kind, 'found')
    const b = await node(bucket, [fakes[1]])
    const rb = await b.cache.getNarInfo(two.hashPart)
    assert.equal(rb.kind, 'found')
    if (rb.kind !== 'found') return
    assert.equal(formatNixHash(parseNarInfo(rb.text).narHash), formatNixHash(one.info.narHash))
    assert.equal(fakes[1].server.count(`/${two.hashPart}.narinfo`), 0, "the node's upstream was not asked")
  })

  test('a push through one node lands in the bucket and is served by another', async () => {
    const { bucket, fakes } = await fresh()
    const pushKey = generateSecretKey('pusher')
    const path = fakePath('bucket-pushed', 'pushed contents')
    const a = await node(bucket, fakes, { pushKeys: [pushKey] })
    await a.push.receiveNar(path.fileName, Readable.from([path.nar]))
    assert.equal(await a.push.receiveNarInfo(path.hashPart, formatNarInfo(signNarInfo(path.info, pushKey))), 'admitted')
    await a.uploads.idle()
    assert.equal(await objectSize(client, bucket, `cache/nar/${path.fileName}`), path.nar.length)
    const pinned = parseNarInfo((await objectText(client, bucket, `cache/${path.hashPart}.narinfo`))!)
    assert.equal(validSignatures(pinned, [toPublicKey(key)]).length, 1)
    assert.equal(pinned.fileSize, path.nar.length)
    const b = await node(bucket, fakes)
    assert.equal((await b.cache.getNarInfo(path.hashPart)).kind, 'found')
    assert.deepEqual(await receive(await b.cache.getNar(path.fileName)), path.nar)
    assert.deepEqual(fakes[0].server.requests, [])
  })

  test('a node that remembers a path as absent serves it once another node took its push, without waiting for the absence to expire', async () => {
    const { bucket, fakes } = await fresh()
    const pushKey = generateSecretKey('pusher')
    const path = fakePath('bucket-pushed-after-404', 'pushed after a 404')
    const b = await node(bucket, fakes, { negativeTtlMs: 3_600_000 })
    assert.equal((await b.cache.getNarInfo(path.hashPart)).kind, 'absent', "the pusher's query: absent everywhere")
    const a = await node(bucket, fakes, { pushKeys: [pushKey] })
    await a.push.receiveNar(path.fileName, Readable.from([path.nar]))
    assert.equal(await a.push.receiveNarInfo(path.hashPart, formatNarInfo(signNarInfo(path.info, pushKey))), 'admitted')
    await a.uploads.idle()
    const upstreamAsked = fakes[0].server.requests.length
    const again = await b.cache.getNarInfo(path.hashPart)
    assert.equal(again.kind, 'found', 'found in the bucket despite the remembered absence')
    assert.deepEqual(await receive(await b.cache.getNar(path.fileName)), path.nar)
    assert.equal(fakes[0].server.requests.length, upstreamAsked, 'the remembered absence still spares the upstreams')
    const other = fakePath('bucket-still-absent', 'never pushed')
    assert.equal((await b.cache.getNarInfo(other.hashPart)).kind, 'absent')
    const asked = fakes[0].server.requests.length
    assert.equal((await b.cache.getNarInfo(other.hashPart)).kind, 'absent', 'still absent, from memory and the bucket')
    assert.equal(fakes[0].server.requests.length, asked, 'the upstream is not asked again while the absence is remembered')
  })

  test('a push of another NarHash than the bucket pins is refused as a conflict', async () => {
    const { bucket, fakes } = await fresh()
    const pushKey = generateSecretKey('pusher')
    const one = fakePath('bucket-push-conflict', 'admitted from upstream', fakes[0].key)
    const two = fakePath('bucket-push-conflict', 'pushed elsewhere')
    await addToCache(fakes[0].dir, one)
    const a = await node(bucket, fakes)
    assert.equal((await a.cache.getNarInfo(one.hashPart)).kind, 'found')
    const b = await node(bucket, [], { pushKeys: [pushKey] })
    await b.push.receiveNar(two.fileName, Readable.from([two.nar]))
    await assert.rejects(b.push.receiveNarInfo(two.hashPart, formatNarInfo(signNarInfo(two.info, pushKey))), { code: 'PUSH_CONFLICT' })
    assert.equal(await b.store.getNarInfo(two.hashPart), undefined)
  })
})
