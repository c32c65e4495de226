import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import type { ReadableStream } from 'node:stream/web'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { s3SkipReason, startS3Server, type S3TestServer } from './s3-server.js'

const skip = s3SkipReason()

const BIG_SIZE = 20 * 1024 * 1024 + 12_345
const CHUNK = 1024 * 1024

/** Deterministic pseudo-random bytes (an AES-CTR keystream), made chunk by chunk. */
function* pseudoRandom(size: number): Generator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0))
  for (let done = 0; done < size; done += CHUNK) yield cipher.update(Buffer.alloc(Math.min(CHUNK, size - done)))
}

/** The bytes [start, end] of {@link pseudoRandom}, found by running the stream up to `end`. */
function pseudoRandomRange(start: number, end: number): Buffer {
  const parts: Buffer[] = []
  let offset = 0
  for (const chunk of pseudoRandom(end + 1)) {
    if (offset + chunk.length > start) parts.push(chunk.subarray(Math.max(0, start - offset)))
    offset += chunk.length
  }
  return Buffer.concat(parts).subarray(0, end - start + 1)
}

async function sha256Of(stream: AsyncIterable<Uint8Array>): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(stream, hash)
  return hash.digest('hex')
}

/** The SDK's error shape: name and HTTP status, so a failed assertion shows both. */
async function s3Error(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof S3ServiceException, `not an S3ServiceException: ${String(err)}`)
    return { name: err.name, status: err.$metadata.httpStatusCode }
  }
  assert.fail('the request succeeded')
}

describe('S3 test server (Swift with s3api)', { skip }, () => {
  let server: S3TestServer
  let s3: S3Client
  const bigSha = sha256Of(Readable.from(pseudoRandom(BIG_SIZE)))

  before(async () => {
    server = await startS3Server()
    s3 = await server.client()
    await server.createBucket('public-cache', { publicRead: true })
    await server.createBucket('private-cache')
  })

  after(async () => {
    s3?.destroy()
    await server?.stop()
  })

  test('env names the credentials and region, and nothing else', () => {
    assert.deepEqual(server.env, { AWS_ACCESS_KEY_ID: 'test:tester', AWS_SECRET_ACCESS_KEY: server.secretAccessKey, AWS_REGION: 'us-east-1' })
    assert.match(server.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/)
  })

  test('a streamed multipart upload reads back whole and by range', async () => {
    const upload = new Upload({
      client: s3,
      params: { Bucket: 'public-cache', Key: 'nar/big.nar', Body: Readable.from(pseudoRandom(BIG_SIZE)) },
      partSize: 5 * 1024 * 1024,
      queueSize: 2,
    })
    await upload.done()

    const whole = await s3.send(new GetObjectCommand({ Bucket: 'public-cache', Key: 'nar/big.nar' }))
    assert.equal(whole.ContentLength, BIG_SIZE)
    assert.equal(await sha256Of(whole.Body as Readable), await bigSha)

    // Across the boundary of the first two parts.
    const start = 5 * 1024 * 1024 - 100
    const end = start + 299
    const ranged = await s3.send(new GetObjectCommand({ Bucket: 'public-cache', Key: 'nar/big.nar', Range: `bytes=${start}-${end}` }))
    assert.equal(ranged.ContentRange, `bytes ${start}-${end}/${BIG_SIZE}`)
    assert.deepEqual(Buffer.from(await ranged.Body!.transformToByteArray()), pseudoRandomRange(start, end))

    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'public-cache', Prefix: 'nar/' }))
    assert.deepEqual(listed.Contents?.map((o) => [o.Key, o.Size]), [['nar/big.nar', BIG_SIZE]])
  })

  test('conditional create: the second put with IfNoneMatch * fails with 412 PreconditionFailed', async () => {
    const put = (body: string): Promise<unknown> => s3.send(new PutObjectCommand({ Bucket: 'private-cache', Key: 'once.narinfo', Body: body, IfNoneMatch: '*' }))
    await put('first')
    assert.deepEqual(await s3Error(put('second')), { name: 'PreconditionFailed', status: 412 })
    const kept = await s3.send(new GetObjectCommand({ Bucket: 'private-cache', Key: 'once.narinfo' }))
    assert.equal(await kept.Body!.transformToString(), 'first')
  })

  test('a missing key is 404 NoSuchKey', async () => {
    assert.deepEqual(await s3Error(s3.send(new GetObjectCommand({ Bucket: 'private-cache', Key: 'absent' }))), { name: 'NoSuchKey', status: 404 })
  })

  test('a wrong secret is refused with 403', async () => {
    const wrong = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: 'not-the-secret' },
    })
    try {
      const got = await s3Error(wrong.send(new GetObjectCommand({ Bucket: 'private-cache', Key: 'once.narinfo' })))
      assert.deepEqual(got, { name: 'SignatureDoesNotMatch', status: 403 })
    } finally {
      wrong.destroy()
    }
  })

  test('anonymous path-style GET reads a public-read bucket, multipart objects included, and not a private one', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'public-cache', Key: 'nix-cache-info', Body: 'StoreDir: /nix/store\n' }))
    const info = await fetch(`${server.endpoint}/public-cache/nix-cache-info`)
    assert.equal(info.status, 200)
    assert.equal(await info.text(), 'StoreDir: /nix/store\n')

    const big = await fetch(`${server.endpoint}/public-cache/nar/big.nar`)
    assert.equal(big.status, 200)
    assert.equal(await sha256Of(Readable.fromWeb(big.body! as ReadableStream<Uint8Array>)), await bigSha)

    const missing = await fetch(`${server.endpoint}/public-cache/absent.narinfo`)
    assert.equal(missing.status, 404)
    await missing.body?.cancel()

    const refused = await fetch(`${server.endpoint}/private-cache/once.narinfo`)
    assert.equal(refused.status, 401)
    assert.doesNotMatch(await refused.text(), /first/)
  })
})

/** Processes whose command line names an instance directory of the process `pid`. */
function swiftProcessesOf(pid: number): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(`/srv/narthex-s3/${pid}-`)) found.push(Number(entry))
    } catch {
      // Gone meanwhile.
    }
  }
  return found
}

test('the servers die with a test process killed outright', { skip }, async () => {
  const helper = new URL('./s3-server.ts', import.meta.url).href
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
    `const { startS3Server } = await import(${JSON.stringify(helper)}); const s = await startS3Server(); console.log(s.endpoint); setInterval(() => {}, 60_000)`,
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  let endpoint = ''
  for await (const chunk of child.stdout) {
    endpoint += String(chunk)
    if (endpoint.includes('\n')) break
  }
  endpoint = endpoint.trim()
  assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+$/)
  assert.equal((await fetch(`${endpoint}/healthcheck`)).status, 200)
  assert.equal(swiftProcessesOf(child.pid!).length, 4)

  child.kill('SIGKILL')
  await new Promise((resolve) => child.once('exit', resolve))
  for (let i = 0; i < 50 && swiftProcessesOf(child.pid!).length > 0; i++) await sleep(100)
  assert.deepEqual(swiftProcessesOf(child.pid!), [])
  await assert.rejects(fetch(`${endpoint}/healthcheck`))
})
