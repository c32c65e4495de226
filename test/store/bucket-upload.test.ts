/**
 * The durable upload queue against a real S3 server (Swift): a NAR committed
 * while the bucket is down stays queued (and on disk) across a restart and is
 * uploaded once the bucket answers; large files go up in parts; an object the
 * bucket holds already is not sent again.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import pino from 'pino'
import { encodeNix32, formatNixHash, narFileName, parseNixHash, type S3Location } from '../../src/protocol/index.js'
import { Bucket, Store, UploadQueue } from '../../src/store/index.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'

const skip = s3SkipReason()
const log = pino({ level: 'silent' })

/** Commits `bytes` as an uncompressed NAR file named after their sha256; returns its name. */
async function commitFile(store: Store, bytes: Buffer): Promise<string> {
  const digest = createHash('sha256').update(bytes).digest()
  const name = narFileName(encodeNix32(digest), 'none')
  const hash = formatNixHash(parseNixHash(`sha256:${encodeNix32(digest)}`))
  const temp = store.tempPath(name)
  await writeFile(temp, bytes)
  await store.commitNar(temp, name, { fileHash: hash, fileSize: bytes.length, narHash: hash, narSize: bytes.length, compression: 'none', storedAt: Date.now() })
  return name
}

async function objectDigest(client: S3Client, bucket: string, key: string): Promise<{ size: number; sha256: string }> {
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of out.Body as AsyncIterable<Buffer>) {
    hash.update(chunk)
    size += chunk.length
  }
  return { size, sha256: hash.digest('hex') }
}

async function pendingNames(store: Store): Promise<string[]> {
  const names: string[] = []
  for await (const [name] of store.pendingUploads()) names.push(name)
  return names
}

describe('the upload queue', { skip }, () => {
  let server: S3TestServer
  let client: S3Client
  let live: S3Location
  const dirs: string[] = []

  before(async () => {
    server = await startS3Server()
    client = await server.client()
    Object.assign(process.env, server.env)
    await server.createBucket('uploads')
    live = { bucket: 'uploads', prefix: 'p/', endpoint: server.endpoint, region: server.region, forcePathStyle: true }
  })
  after(async () => {
    await server?.stop()
    for (const d of dirs) await rm(d, { recursive: true, force: true })
  })

  async function dataDir(): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'narthex-upload-'))
    dirs.push(d)
    return d
  }

  test('a NAR committed while the bucket is down stays queued and on disk, and is uploaded after a restart', async () => {
    const dir = await dataDir()
    // Nothing listens there: every request is refused.
    const down = await Bucket.open({ ...live, endpoint: 'http://127.0.0.1:9' })
    let { store } = await Store.open(dir, { uploadToBucket: true })
    let queue = new UploadQueue(store, down, log, { minBackoffMs: 20, maxBackoffMs: 50 })
    await queue.start()
    const bytes = randomBytes(100_000)
    const name = await commitFile(store, bytes)
    assert.deepEqual(await pendingNames(store), [name], 'queued in the commit batch')
    while (queue.figures.failures < 2) await new Promise((r) => setTimeout(r, 20))
    assert.equal(queue.figures.pending, 1)
    assert.match(queue.figures.lastError?.message ?? '', /bucket: cannot/)
    const gc = await store.collectGarbage(0)
    assert.deepEqual(gc.evicted, [], 'a NAR waiting for its upload is not evicted')
    await queue.close()
    await store.close()
    down.close()

    const bucket = await Bucket.open(live)
    ;({ store } = await Store.open(dir, { uploadToBucket: true }))
    queue = new UploadQueue(store, bucket, log)
    assert.equal(await queue.start(), 1, 'replayed at start')
    await queue.idle()
    assert.deepEqual(await pendingNames(store), [])
    assert.deepEqual(await objectDigest(client, 'uploads', `p/nar/${name}`), { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
    assert.equal(queue.figures.uploadedBytes, bytes.length)
    await queue.close()
    await store.close()
    bucket.close()
  })

  test('a large NAR goes up in parts, streamed from its file, and arrives whole', async () => {
    const { store } = await Store.open(await dataDir(), { uploadToBucket: true })
    const bucket = await Bucket.open(live)
    const queue = new UploadQueue(store, bucket, log)
    await queue.start()
    const bytes = randomBytes(40 * 1024 * 1024 + 123)
    const name = await commitFile(store, bytes)
    await queue.idle()
    assert.deepEqual(await objectDigest(client, 'uploads', `p/nar/${name}`), { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })
    await queue.close()
    await store.close()
    bucket.close()
  })

  test('a NAR the bucket holds already with the same size is not uploaded again', async () => {
    const { store } = await Store.open(await dataDir(), { uploadToBucket: true })
    const bucket = await Bucket.open(live)
    const bytes = randomBytes(5000)
    const digest = createHash('sha256').update(bytes).digest()
    const name = narFileName(encodeNix32(digest), 'none')
    await client.send(new PutObjectCommand({ Bucket: 'uploads', Key: `p/nar/${name}`, Body: bytes }))
    const queue = new UploadQueue(store, bucket, log)
    await queue.start()
    await commitFile(store, bytes)
    await queue.idle()
    assert.equal(queue.figures.skippedFiles, 1)
    assert.equal(queue.figures.uploadedFiles, 0)
    assert.deepEqual(await pendingNames(store), [])
    await queue.close()
    await store.close()
    bucket.close()
  })

  test('a store without a bucket queues nothing', async () => {
    const { store } = await Store.open(await dataDir())
    await commitFile(store, randomBytes(100))
    assert.deepEqual(await pendingNames(store), [])
    await store.close()
  })
})
