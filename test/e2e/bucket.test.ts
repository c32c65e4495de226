/**
 * The bucket tier end to end: narthex processes configured with `storage.s3`
 * on a real S3 server (Swift), real Nix as the client. A node admits and
 * uploads; a node started on an EMPTY data directory (same bucket, same key)
 * serves the closure without asking the upstream; a push through narthex lands
 * in the bucket; and Nix reads the bucket directly over plain HTTP (Debian's
 * Nix has no S3 support, so a public-read bucket, path-style), trusting only
 * narthex's key: the bucket is a standard binary cache.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3'
import { narUrl, parseNarUrl } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason() ?? s3SkipReason()
const TOKEN = 'bucket-push-token-0123456789'

describe('narthex nodes sharing a bucket, with real Nix', { skip }, () => {
  let nix: NixEnv
  let server: S3TestServer
  let client: S3Client
  let up: StaticServer
  let upstreamKey: NixKey
  let pushKey: NixKey
  let paths: Record<string, string>
  let shared: string
  let netrc: string
  const started: NarthexProcess[] = []

  /** A node on a fresh data directory, the shared key and the bucket; credentials only in its environment. */
  async function startNode(s3: { endpoint?: string; prefix?: string } = {}, extra: Record<string, unknown> = {}): Promise<NarthexProcess> {
    const saved = { ...process.env }
    Object.assign(process.env, server.env)
    try {
      const p = await NarthexProcess.start({
        signingKeyFile: join(shared, 'narthex.key'),
        upstreams: [{ name: 'up', url: up.url, publicKeys: [upstreamKey.publicKey], retries: 0 }],
        push: { tokens: [TOKEN], publicKeys: [pushKey.publicKey], minSignatures: 1 },
        storage: { maxSize: '1GiB', s3: { bucket: 'shared', prefix: s3.prefix ?? 'cache', endpoint: s3.endpoint ?? server.endpoint, region: server.region } },
        ...extra,
      })
      started.push(p)
      return p
    } finally {
      process.env = saved
    }
  }

  /** Object keys under `prefix`. */
  async function keysUnder(prefix: string): Promise<string[]> {
    const out = await client.send(new ListObjectsV2Command({ Bucket: 'shared', Prefix: prefix }))
    return (out.Contents ?? []).map((o) => o.Key!).sort()
  }

  /** The node's upload figures, from its metrics. */
  async function uploadFigures(node: NarthexProcess): Promise<{ pending: number; uploaded: number; failures: number }> {
    const text = await (await fetch(`${node.url}/metrics`)).text()
    return {
      pending: Number(/^narthex_bucket_uploads_pending (\d+)/m.exec(text)?.[1] ?? NaN),
      uploaded: Number(/^narthex_bucket_uploaded_total\{unit="files"\} (\d+)/m.exec(text)?.[1] ?? 0),
      failures: Number(/^narthex_bucket_upload_failures_total (\d+)/m.exec(text)?.[1] ?? 0),
    }
  }

  /** Waits until the node's upload queue is empty (its metric) and it uploaded at least `files`. */
  async function uploadsDone(node: NarthexProcess, files: number): Promise<void> {
    const deadline = Date.now() + 30_000
    for (;;) {
      const { pending, uploaded } = await uploadFigures(node)
      if (pending === 0 && uploaded >= files) return
      if (Date.now() > deadline) throw new Error(`uploads not done: pending ${pending}, uploaded ${uploaded}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  before(async () => {
    nix = await NixEnv.create()
    server = await startS3Server()
    client = await server.client()
    await server.createBucket('shared', { publicRead: true })
    shared = await mkdtemp(join(tmpdir(), 'narthex-bucket-e2e-'))
    paths = await nix.buildClosure({ lib: {}, app: { deps: ['lib'], bigBytes: 300_000 }, pushed: { bigBytes: 50_000 } })
    upstreamKey = await nix.genKey('upstream-1')
    pushKey = await nix.genKey('corp-1')
    await nix.sign(upstreamKey.secretFile, [paths.app])
    const dir = nix.freshDir('upstream')
    await nix.copyToCache(dir, [paths.app])
    up = await startStaticServer(dir)
    netrc = join(nix.dir, 'netrc')
    await writeFile(netrc, `machine 127.0.0.1 login ci password ${TOKEN}\n`)
  })

  after(async () => {
    await Promise.all(started.map((p) => p.cleanup()))
    await up?.close()
    client?.destroy()
    await server?.stop()
    await nix?.cleanup()
    if (shared) await rm(shared, { recursive: true, force: true })
  })

  test('a node admits and uploads; a node on an empty data directory serves the closure from the bucket alone', async () => {
    const a = await startNode()
    const first = await nix.substitute(a.url, [paths.app], [a.publicKey])
    for (const p of [paths.app, paths.lib]) await nix.verifyPath(first.store, p)
    await uploadsDone(a, 2)
    const objects = await keysUnder('cache/')
    for (const p of [paths.app, paths.lib]) assert.ok(objects.includes(`cache/${hashPartOf(p)}.narinfo`), `no narinfo of ${p} in the bucket`)
    assert.equal(objects.filter((k) => k.startsWith('cache/nar/')).length, 2, `NAR objects: ${objects.join(', ')}`)
    assert.ok(objects.includes('cache/nix-cache-info'))
    const healthz = await fetch(`${a.url}/healthz`)
    assert.equal(healthz.status, 200)
    await a.stop()

    up.requests.length = 0
    const b = await startNode()
    assert.notEqual(b.dataDir, a.dataDir)
    assert.equal(b.publicKey, a.publicKey, 'the nodes share the signing key')
    const narinfo = await (await fetch(`${b.url}/${hashPartOf(paths.app)}.narinfo`)).text()
    const url = /^URL: (.*)$/m.exec(narinfo)![1]
    // Served under the path's hash part; the bucket keeps Nix's flat layout.
    const whole = Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: 'shared', Key: `cache/${flatKey(url)}` }))).Body!.transformToByteArray())
    await nix.substitute(b.url, [paths.app], [b.publicKey])
    // Ranges are served from the stored file: its commit may trail the client's last byte a little.
    let ranged = await fetch(`${b.url}/${url}`, { headers: { Range: 'bytes=10-109' } })
    for (let i = 0; ranged.status === 200 && i < 50; i++) {
      await ranged.arrayBuffer()
      await new Promise((r) => setTimeout(r, 100))
      ranged = await fetch(`${b.url}/${url}`, { headers: { Range: 'bytes=10-109' } })
    }
    assert.equal(ranged.status, 206)
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), whole.subarray(10, 110))
    assert.deepEqual(up.requests, [], 'the node with an empty data directory asked the upstream')
    assert.ok(b.logged('followed the bucket').length >= 2)
  })

  test('Nix reads the bucket directly as a binary cache signed by narthex', async () => {
    const node = started.find((p) => p.child?.exitCode === null) ?? (await startNode())
    await nix.substitute(node.url, [paths.app], [node.publicKey])
    await uploadsDone(node, 0)
    const { store } = await nix.substitute(`${server.endpoint}/shared/cache`, [paths.app], [node.publicKey])
    for (const p of [paths.app, paths.lib]) await nix.verifyPath(store, p)
  })

  test('a push through narthex lands in the bucket, readable by Nix from there', async () => {
    const node = started.find((p) => p.child?.exitCode === null) ?? (await startNode())
    await nix.push(`${node.url}?secret-key=${pushKey.secretFile}`, [paths.pushed], { 'netrc-file': netrc })
    const deadline = Date.now() + 30_000
    while (!(await keysUnder('cache/nar/')).some((k) => k.endsWith('.nar.xz') || k.endsWith('.nar')) || (await keysUnder(`cache/${hashPartOf(paths.pushed)}.narinfo`)).length === 0) {
      if (Date.now() > deadline) throw new Error('the pushed path did not reach the bucket')
      await new Promise((r) => setTimeout(r, 100))
    }
    await uploadsDone(node, 1)
    const { store } = await nix.substitute(`${server.endpoint}/shared/cache`, [paths.pushed], [node.publicKey])
    await nix.verifyPath(store, paths.pushed)
  })

  test('while the bucket is unreachable /healthz stays 200, stored paths are served, NARs queue, and the queue drains once it is back', async () => {
    const proxy = await startCuttableProxy(new URL(server.endpoint))
    try {
      const node = await startNode({ endpoint: proxy.url, prefix: 'outage' }, { prefetch: { nars: false } })
      const lib = await fetch(`${node.url}/${hashPartOf(paths.lib)}.narinfo`)
      assert.equal(lib.status, 200)
      const url = /^URL: (.*)$/m.exec(await lib.text())![1]
      proxy.cut()
      const nar = await fetch(`${node.url}/${url}`)
      assert.equal(nar.status, 200, 'the NAR comes from the upstream while the bucket is down')
      await nar.arrayBuffer()
      assert.equal((await fetch(`${node.url}/healthz`)).status, 200)
      const deadline = Date.now() + 20_000
      while ((await uploadFigures(node)).failures < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      const down = await uploadFigures(node)
      assert.equal(down.pending, 1, 'the verified NAR waits for its upload')
      assert.ok(down.failures >= 1)
      assert.equal((await fetch(`${node.url}/${hashPartOf(paths.app)}.narinfo`)).status, 503, 'a cold narinfo cannot be pinned')
      assert.equal((await fetch(`${node.url}/${hashPartOf(paths.lib)}.narinfo`)).status, 200, 'an indexed path is still served')
      await proxy.restore()
      await uploadsDone(node, 1)
      assert.ok((await keysUnder(`outage/${flatKey(url)}`)).length === 1, 'the queued NAR reached the bucket')
    } finally {
      await proxy.close()
    }
  })
})

/** The bucket key of a NAR narthex serves at `url` (`nar/<hashPart>/<fileName>` → `nar/<fileName>`). */
function flatKey(url: string): string {
  const served = parseNarUrl(url)
  if (!served) throw new Error(`not a NAR URL narthex serves: ${url}`)
  return narUrl(served.fileName)
}

/** A TCP proxy to `target` whose connections can be cut (and refused) and restored, on one port. */
async function startCuttableProxy(target: URL): Promise<{ url: string; cut(): void; restore(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  const listen = (port: number) =>
    new Promise<Server>((resolve) => {
      const srv = createServer((client) => {
        const upstream = connect(Number(target.port), target.hostname)
        for (const s of [client, upstream]) {
          sockets.add(s)
          s.on('error', () => undefined)
          s.on('close', () => sockets.delete(s))
        }
        client.pipe(upstream).pipe(client)
      })
      srv.listen(port, '127.0.0.1', () => resolve(srv))
    })
  let srv: Server | undefined = await listen(0)
  const port = (srv.address() as AddressInfo).port
  const stop = async () => {
    const s = srv
    srv = undefined
    for (const sock of sockets) sock.destroy()
    if (s) await new Promise((r) => s.close(r))
  }
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => void stop(),
    restore: async () => {
      srv ??= await listen(port)
    },
    close: stop,
  }
}
