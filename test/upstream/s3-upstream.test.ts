/**
 * An s3:// upstream over a real S3 server (Swift's S3 API, test/helpers/s3-server.ts): narinfos
 * present and absent, NARs streamed and cut short, refused credentials, an unreachable endpoint,
 * and a narinfo pointing into another bucket. Credentials reach the upstream the only way they
 * can: through the AWS SDK's chain, here the AWS_* environment variables.
 */
import assert from 'node:assert/strict'
import { createServer, type AddressInfo } from 'node:net'
import { buffer, text } from 'node:stream/consumers'
import { after, afterEach, before, describe, test } from 'node:test'
import type { S3Client } from '@aws-sdk/client-s3'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { isNarthexError } from '../../src/errors.js'
import { formatNarInfo, generateSecretKey } from '../../src/protocol/index.js'
import { Upstream, type UpstreamOptions } from '../../src/upstream/index.js'
import { fakePath } from '../helpers/fake-cache.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'

const skip = s3SkipReason()
const key = generateSecretKey('bucket-1')
const present = fakePath('present-1.0', 'here\n', key)
const absent = fakePath('absent-1.0', 'nowhere\n', key)
const prefixed = fakePath('prefixed-1.0', 'under a prefix\n', key)
const hostile = fakePath('hostile-1.0', 'elsewhere\n', key)
const DRV = `${'1'.repeat(32)}-hello-1.0.drv`
/** Large enough to arrive in many chunks, so the test can stop after the first. */
const BIG = Buffer.alloc(8 << 20, 'nar bytes ')

describe('an s3:// upstream over a real S3 server', { skip }, () => {
  let server: S3TestServer
  let client: S3Client
  const opened: Upstream[] = []
  const savedEnv = { ...process.env }

  const put = (bucket: string, objectKey: string, body: string | Buffer) => client.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey, Body: body }))

  before(async () => {
    server = await startS3Server()
    client = await server.client()
    await server.createBucket('nix-cache')
    await server.createBucket('other-cache')
    await put('nix-cache', `${present.hashPart}.narinfo`, formatNarInfo(present.info))
    await put('nix-cache', present.info.url, present.nar)
    await put('nix-cache', 'nar/big.nar', BIG)
    await put('nix-cache', `log/${DRV}`, 'building hello\n')
    await put('nix-cache', `team/cache/${prefixed.hashPart}.narinfo`, formatNarInfo(prefixed.info))
    await put('nix-cache', `team/cache/${prefixed.info.url}`, prefixed.nar)
    // A narinfo in narthex's bucket whose NAR lies in another bucket the same credentials can read.
    await put('nix-cache', `${hostile.hashPart}.narinfo`, formatNarInfo({ ...hostile.info, url: `s3://other-cache/${hostile.info.url}` }))
    await put('other-cache', hostile.info.url, hostile.nar)
  })
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((u) => u.close()))
    process.env = { ...savedEnv }
  })
  after(async () => {
    client?.destroy()
    await server?.stop()
  })

  function upstream(url = `s3://nix-cache?endpoint=${server.endpoint}&region=${server.region}`, options: Partial<UpstreamOptions> = {}, onRejected?: (status: number, message: string) => void): Upstream {
    Object.assign(process.env, server.env)
    const u = new Upstream(
      { name: 'bucket-1', url, timeoutMs: 5000, retries: 0, maxConnections: 4, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 30_000, ...options },
      { onCredentialsRejected: (_name, status, message) => onRejected?.(status, message) },
    )
    opened.push(u)
    return u
  }

  test('a narinfo in the bucket is present, a missing key absent; neither counts against health', async () => {
    const u = upstream()
    const found = await u.fetchNarInfo(present.hashPart)
    assert.equal(found.kind, 'present', 'the narinfo in the bucket was not found')
    assert.equal(found.kind === 'present' && found.info.storePath.hashPart, present.hashPart)
    assert.deepEqual(await u.fetchNarInfo(absent.hashPart), { kind: 'absent' }, 'a missing key was not "absent"')
    assert.equal(u.health().consecutiveFailures, 0)
    assert.equal(u.health().credentialsRejected, false)
  })

  test('a NAR is streamed with its length; a missing one is NOT_FOUND and does not count against health', async () => {
    const u = upstream()
    const found = await u.fetchNarInfo(present.hashPart)
    assert.ok(found.kind === 'present')
    const nar = await u.openNar(u.resolveUrl(found.info.url))
    assert.equal(nar.contentLength, present.nar.length)
    assert.deepEqual(await buffer(nar.body), present.nar, 'the NAR bytes differ')
    await assert.rejects(u.openNar(u.resolveUrl('nar/missing.nar')), (err) => isNarthexError(err, 'NOT_FOUND'))
    assert.equal(u.health().consecutiveFailures, 0)
  })

  test('a large NAR arrives as a stream, and aborting the download ends it', async () => {
    const u = upstream()
    const abort = new AbortController()
    const nar = await u.openNar(u.resolveUrl('nar/big.nar'), abort.signal)
    assert.equal(nar.contentLength, BIG.length)
    const chunks = nar.body[Symbol.asyncIterator]()
    const first = await chunks.next()
    assert.ok(!first.done && (first.value as Buffer).length < BIG.length, 'the NAR came in one piece: it was buffered, not streamed')
    abort.abort()
    await assert.rejects(
      (async () => {
        for (let c = await chunks.next(); !c.done; c = await chunks.next());
      })(),
      'the download went on after its abort signal',
    )
  })

  test('a key prefix in the URL (s3://bucket/prefix) is the cache root', async () => {
    const u = upstream(`s3://nix-cache/team/cache?endpoint=${server.endpoint}&region=${server.region}`)
    const found = await u.fetchNarInfo(prefixed.hashPart)
    assert.ok(found.kind === 'present', 'the narinfo under the prefix was not found')
    assert.deepEqual(await buffer((await u.openNar(u.resolveUrl(found.info.url))).body), prefixed.nar)
    assert.deepEqual(await u.fetchNarInfo(present.hashPart), { kind: 'absent' }, 'a narinfo outside the prefix was found')
  })

  test('build logs are read from log/ in the bucket; a missing realisation is none', async () => {
    const u = upstream()
    assert.equal(await text((await u.openLog(DRV)).body), 'building hello\n')
    await assert.rejects(u.openLog(`${'2'.repeat(32)}-other.drv`), (err) => isNarthexError(err, 'NOT_FOUND'))
    assert.equal(await u.fetchRealisation('sha256:00!out', 65536), undefined)
  })

  test('a wrong secret is "credentials rejected", never "absent"; after the fix a reload (SIGHUP) reads the chain again', async () => {
    const rejections: Array<[number, string]> = []
    const u = upstream(undefined, {}, (status, message) => rejections.push([status, message]))
    process.env.AWS_SECRET_ACCESS_KEY = 'not-the-secret'
    await assert.rejects(
      u.fetchNarInfo(present.hashPart),
      (err) => isNarthexError(err, 'UPSTREAM_UNAVAILABLE') && (err.detail as { reason?: string }).reason === 'UNAUTHORIZED' && /credentials rejected .*AWS/.test(err.message),
      'a 403 to a wrong secret was not reported as rejected credentials',
    )
    await assert.rejects(u.fetchNarInfo(absent.hashPart), (err) => isNarthexError(err, 'UPSTREAM_UNAVAILABLE'), 'a missing key under rejected credentials was "absent"')
    assert.equal(u.health().credentialsRejected, true)
    assert.equal(rejections.length, 1, 'the rejection was not reported once')
    assert.equal(rejections[0][0], 403)
    assert.doesNotMatch(rejections[0][1], /not-the-secret|testing/, 'the message shows a secret')
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey
    u.reloadCredentials()
    assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present', 'the fixed secret was not picked up on reload')
    assert.equal(u.health().credentialsRejected, false)
  })

  test('a narinfo pointing its NAR into another bucket is refused', async () => {
    const u = upstream()
    const found = await u.fetchNarInfo(hostile.hashPart)
    assert.ok(found.kind === 'present')
    assert.throws(() => u.resolveUrl(found.info.url), (err) => isNarthexError(err, 'UPSTREAM_INVALID') && /another bucket/.test(err.message))
    await assert.rejects(u.openNar(found.info.url), (err) => isNarthexError(err, 'UPSTREAM_INVALID'), 'openNar fetched from another bucket')
  })

  test('an unreachable endpoint is retried, then UPSTREAM_UNAVAILABLE, and marks the upstream down', async () => {
    const closed = createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const port = (closed.address() as AddressInfo).port
    await new Promise((r) => closed.close(r))
    const u = upstream(`s3://nix-cache?endpoint=http://127.0.0.1:${port}&region=us-east-1`, { retries: 1, failureThreshold: 1 })
    await assert.rejects(u.fetchNarInfo(present.hashPart), (err) => isNarthexError(err, 'UPSTREAM_UNAVAILABLE') && /could not be reached/.test(err.message))
    assert.equal(u.isDown, true, 'a dead endpoint did not mark the upstream down')
  })
})
