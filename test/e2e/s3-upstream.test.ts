/**
 * An S3 bucket as an upstream, end to end: real Nix makes a binary cache (`nix copy --to
 * file://`, since Debian's Nix has no S3 support), its files go into a bucket on a real S3
 * server, and real Nix substitutes the closure through a narthex process whose upstream is
 * `s3://bucket?endpoint=…&region=…`, with credentials only in narthex's environment. Signatures
 * are checked as for any upstream: an untrusted key or a wrong secret gets the client nothing.
 */
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'

const skip = nixSkipReason() ?? s3SkipReason()

/** Every file under `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)))
}

describe('an s3:// upstream serving real Nix through narthex', { skip }, () => {
  let nix: NixEnv
  let server: S3TestServer
  let client: S3Client
  let key: NixKey
  let paths: Record<string, string>
  let upstreamUrl: string
  const started: NarthexProcess[] = []

  /** A narthex whose only upstream is the bucket, run with `env` (the AWS chain's environment variables). */
  async function narthexWith(env: Record<string, string>, publicKeys: string[]): Promise<NarthexProcess> {
    const saved = { ...process.env }
    // The child inherits the environment at spawn; the test process keeps its own afterwards.
    Object.assign(process.env, env)
    try {
      const p = await NarthexProcess.start({ upstreams: [{ name: 'bucket', url: upstreamUrl, publicKeys, retries: 0 }] })
      started.push(p)
      return p
    } finally {
      process.env = saved
    }
  }

  before(async () => {
    nix = await NixEnv.create()
    server = await startS3Server()
    client = await server.client()
    paths = await nix.buildClosure({ lib: {}, app: { deps: ['lib'], bigBytes: 300_000 } })
    key = await nix.genKey('s3-cache-1')
    await nix.sign(key.secretFile, [paths.app])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.app])
    await server.createBucket('nix-cache')
    const files = await filesUnder(dir)
    assert.ok(files.some((f) => f.startsWith('nar/')), 'nix copy wrote no NAR files')
    for (const f of files) await client.send(new PutObjectCommand({ Bucket: 'nix-cache', Key: f, Body: await readFile(join(dir, f)) }))
    upstreamUrl = `s3://nix-cache?endpoint=${server.endpoint}&region=${server.region}`
  })

  after(async () => {
    await Promise.all(started.map((p) => p.cleanup()))
    client?.destroy()
    await server?.stop()
    await nix?.cleanup()
  })

  test('nix substitutes the closure from the bucket through narthex, signatures checked', async () => {
    const narthex = await narthexWith(server.env, [key.publicKey])
    const { store } = await nix.substitute(narthex.url, [paths.app], [narthex.publicKey])
    for (const p of [paths.app, paths.lib]) await nix.verifyPath(store, p)
    assert.deepEqual((await nix.closure(paths.app, store)).sort(), [paths.app, paths.lib].sort())
    const admitted = narthex.logged('admitted')
    assert.ok(admitted.some((l) => l.upstream === 'bucket' && l.path === paths.app), 'narthex did not admit the path from the bucket')
    const status = (await (await fetch(`${narthex.url}/status.json`)).json()) as { upstreams: Array<{ name: string; url: string; up: boolean }> }
    assert.deepEqual(
      status.upstreams.map((u) => [u.name, u.url, u.up]),
      [['bucket', `s3://nix-cache/?region=${server.region}&endpoint=${encodeURIComponent(server.endpoint)}`, true]],
      'the status page does not show the bucket as narthex reads it',
    )
  })

  test('a bucket signed by a key the policy does not trust gets the client nothing', async () => {
    const other = await nix.genKey('other-1')
    const narthex = await narthexWith(server.env, [other.publicKey])
    await assert.rejects(nix.substitute(narthex.url, [paths.app], [narthex.publicKey]), NixCommandError, 'a path signed by an untrusted key was served')
    const refused = narthex.logged('refused:').filter((l) => l.path === paths.app)
    assert.ok(refused.length > 0, `narthex did not refuse the path for its signature: ${JSON.stringify(narthex.logs.slice(-5))}`)
  })

  test('a wrong secret in narthex\'s environment is logged as rejected credentials; the client gets nothing', async () => {
    const narthex = await narthexWith({ ...server.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' }, [key.publicKey])
    await assert.rejects(nix.substitute(narthex.url, [paths.app], [narthex.publicKey], { options: { 'download-attempts': '1' } }), NixCommandError)
    const lines = await narthex.waitForLog('credentials rejected')
    assert.ok(lines.length > 0, `narthex did not report the rejected credentials: ${JSON.stringify(narthex.logs.slice(-5))}`)
    assert.ok(!JSON.stringify(narthex.logs).includes('not-the-secret'), 'the secret reached the log')
    const status = (await (await fetch(`${narthex.url}/status.json`)).json()) as { upstreams: Array<{ credentialsRejected: boolean }> }
    assert.equal(status.upstreams[0].credentialsRejected, true, 'the status page does not show the rejected credentials')
    assert.ok(!JSON.stringify(status).includes('not-the-secret'), 'the secret reached the status page')
  })
})
