/**
 * Several narthex nodes behind the real HAProxy running config/haproxy.cfg: the
 * real `nix` substitutes through the balancer, a path's narinfo and NAR land on
 * one node, and a node SIGKILLed in the middle of a closure does not fail the
 * client. Each node has its own data directory and the same signing key; the
 * upstream is a real binary cache written by nix, served on 127.0.0.1. Then the
 * same with a shared bucket (storage.s3) on a real S3 server: the survivors
 * serve a dead node's paths from the bucket without asking the upstream, a
 * push through one node is substituted through another, and two nodes offered
 * different NarHashes for one path admit one.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo, sha256Of } from '../../src/protocol/index.js'
import { copyCacheEntries, forgeNar, hashPartOf } from '../helpers/caches.js'
import { haproxySkipReason, startHaproxy, type Balancer } from '../helpers/haproxy.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { s3SkipReason, startS3Server, type S3TestServer } from '../helpers/s3-server.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason() ?? haproxySkipReason()
const s3Skip = skip ?? s3SkipReason()
const NODES = 3
const PUSH_TOKEN = 'push-token-0123456789abcdef'

/** A counter or gauge of a node's /metrics, summed over its label sets. */
async function metric(node: NarthexProcess, name: string): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  return sum
}

/** Bytes of NARs a node fetched from upstreams, once its downloads are committed (counted at commit). */
async function fetchedBytes(node: NarthexProcess): Promise<number> {
  await until('the downloads are committed', async () => (await metric(node, 'narthex_nar_downloads_in_flight')) === 0)
  return metric(node, 'narthex_nar_bytes_fetched_total')
}

/** A balancer log line (config/haproxy.cfg's httplog) of a request that got a 5xx, no answer, or was cut off. */
function isUncleanRequest(line: string): boolean {
  const m = / (-?\d+) -?\d+ \S+ \S+ (\S{4}) /.exec(line)
  return m !== null && (Number(m[1]) >= 500 || Number(m[1]) < 0 || m[2] !== '----')
}

/** The request paths a node logged (config log.requests). */
function requested(node: NarthexProcess): string[] {
  return node.logs.filter((l) => l.msg === 'request').map((l) => l.path as string)
}

/** Indexes of the nodes that logged a request for the narinfo / for a NAR of the path `hashPart`. */
function nodesAsked(nodes: readonly NarthexProcess[], hashPart: string): { narinfo: number[]; nar: number[] } {
  const which = (test: (p: string) => boolean) => nodes.flatMap((n, i) => (requested(n).some(test) ? [i] : []))
  return { narinfo: which((p) => p === `/${hashPart}.narinfo`), nar: which((p) => p.startsWith(`/nar/${hashPart}/`)) }
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

let nix: NixEnv
let upKey: NixKey
let nodeKey: NixKey
let cacheDir: string
/** Ten small paths in one closure (`p9` the top). */
let small: Record<string, string>
/** Six 2 MiB paths in a chain (`q5` the top). */
let large: Record<string, string>
/** `pushed` and `pushed-lb` (on `pushed-base`), pushed by a client; `contested`, which two upstreams offer with different NARs. */
let others: Record<string, string>
let corpKey: NixKey
/** The upstream cache with the forged `contested`. */
let forgedDir: string

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  const smallSpec: Record<string, { deps?: string[] }> = {}
  for (let i = 0; i < 10; i++) smallSpec[`p${i}`] = i === 0 ? {} : { deps: [`p${i - 1}`] }
  small = await nix.buildClosure(smallSpec)
  const largeSpec: Record<string, { deps?: string[]; bigBytes: number }> = {}
  for (let i = 0; i < 6; i++) largeSpec[`q${i}`] = { bigBytes: 2 * 1024 * 1024, ...(i === 0 ? {} : { deps: [`q${i - 1}`] }) }
  large = await nix.buildClosure(largeSpec)
  upKey = await nix.genKey('up-1')
  nodeKey = await nix.genKey('narthex-cluster-1')
  await nix.sign(upKey.secretFile, [small.p9, large.q5])
  cacheDir = nix.freshDir('upstream')
  await nix.copyToCache(cacheDir, [small.p9])
  await nix.copyToCache(cacheDir, [large.q5], { compression: 'none' })
  if (s3Skip !== undefined) return
  others = await nix.buildClosure({ 'pushed-base': {}, pushed: { deps: ['pushed-base'] }, 'pushed-lb': { deps: ['pushed-base'], bigBytes: 100_000 }, contested: {} })
  corpKey = await nix.genKey('corp-1')
  await nix.sign(upKey.secretFile, [others.contested])
  await nix.copyToCache(cacheDir, [others.contested], { compression: 'none' })
  // The same path with other contents, validly signed by the trusted upstream key: a key holder's forgery.
  forgedDir = nix.freshDir('forged')
  await copyCacheEntries(cacheDir, forgedDir, [others.contested])
  await forgeNar(forgedDir, others.contested, 'hello from', 'HELLO FROM', upKey.secretKey)
})

after(async () => {
  await nix?.cleanup()
})

/**
 * A node's config: one upstream, the shared signing key, a line per request in its log. No NAR
 * prefetch, so that a NAR download running on a node is one a client is receiving.
 */
function nodeConfig(upstream: StaticServer): Record<string, unknown> {
  return {
    upstreams: [{ name: 'up', url: upstream.url, publicKeys: [upKey.publicKey], timeoutMs: 5000, retries: 0 }],
    rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
    signingKeyFile: nodeKey.secretFile,
    prefetch: { nars: false },
    log: { level: 'info', requests: 'info' },
  }
}

describe('three narthex nodes with their own data directories behind HAProxy', { skip }, () => {
  let upstream: StaticServer
  let nodes: NarthexProcess[]
  let lb: Balancer

  before(async () => {
    upstream = await startStaticServer(cacheDir)
    nodes = []
    for (let i = 0; i < NODES; i++) nodes.push(await NarthexProcess.start(nodeConfig(upstream)))
    lb = await startHaproxy(nix.dir, nodes.map((n, i) => ({ name: `node${i + 1}`, url: n.url })))
  })

  after(async () => {
    await lb?.stop()
    for (const n of nodes ?? []) await n.cleanup()
    await upstream?.close()
  })

  test('nix copy --from the balancer substitutes a closure; each path\'s narinfo and NAR went to one node', async () => {
    assert.ok(nodes.every((n) => n.publicKey === nodes[0].publicKey), 'the nodes do not sign with the same key')
    const { store } = await nix.substitute(lb.url, [small.p9], [nodes[0].publicKey])
    const spread = new Set<number>()
    for (const p of Object.values(small)) {
      await nix.verifyPath(store, p)
      const asked = nodesAsked(nodes, hashPartOf(p))
      assert.equal(asked.narinfo.length, 1, `${p}: its narinfo was asked of nodes ${asked.narinfo.join()}`)
      assert.deepEqual(asked.nar, asked.narinfo, `${p}: its NAR went to node ${asked.nar.join()}, its narinfo to node ${asked.narinfo.join()}`)
      spread.add(asked.narinfo[0])
    }
    assert.ok(spread.size > 1, 'ten paths all went to one node: the balancer does not spread by hash part')

    // Each NAR came from the upstream once, as through a single node.
    const cluster = (await Promise.all(nodes.map(fetchedBytes))).reduce((a, b) => a + b, 0)
    const solo = await NarthexProcess.start(nodeConfig(upstream))
    try {
      await nix.substitute(solo.url, [small.p9], [solo.publicKey])
      const single = await fetchedBytes(solo)
      process.stderr.write(`upstream NAR bytes for the small closure: ${cluster} through ${NODES} nodes, ${single} through one node\n`)
      assert.equal(cluster, single, 'the nodes fetched more from the upstream than one node does')
    } finally {
      await solo.cleanup()
    }
  })

  test('a node SIGKILLed in the middle of a closure: the client completes and every path verifies', async () => {
    // 1 MiB/s: each 2 MiB NAR takes two seconds, so the kill lands in the middle of one.
    upstream.fault = (req) => (req.url?.startsWith('/nar/') ? { kind: 'trickle', bytesPerSecond: 1024 * 1024 } : undefined)
    const logStart = lb.logs.length
    const largeHashes = new Set(Object.values(large).map(hashPartOf))
    const client = nix.substitute(lb.url, [large.q5], [nodes[0].publicKey], { timeoutMs: 120_000 }).then(
      (r) => ({ ok: true as const, store: r.store }),
      (err: unknown) => ({ ok: false as const, err }),
    )
    let victim = -1
    await until('a node downloads a NAR of the large closure', async () => {
      for (let i = 0; i < nodes.length; i++) {
        const admittedLarge = nodes[i].logged('admitted').some((l) => largeHashes.has(hashPartOf(String(l.path))))
        if (admittedLarge && (await metric(nodes[i], 'narthex_nar_downloads_in_flight')) > 0) victim = i
      }
      return victim >= 0
    })
    // Well into the NAR: the client has received part of it through the balancer.
    await new Promise((r) => setTimeout(r, 700))
    const killedAt = Date.now()
    await nodes[victim].stop('SIGKILL')
    const result = await client
    const tookMs = Date.now() - killedAt
    upstream.fault = undefined
    let store: string
    if (result.ok) store = result.store
    else {
      // Nix retries a transfer cut off after its first bytes only where the server takes ranges, which
      // a NAR still downloading is not: that one path fails this run. Running nix copy again is the retry.
      assert.ok(result.err instanceof NixCommandError, String(result.err))
      process.stderr.write(`the first nix copy failed after the kill (${tookMs} ms): ${result.err.stderr.split('\n').filter((l) => l.includes('error')).join(' | ')}\n`)
      store = (await nix.substitute(lb.url, [large.q5], [nodes[0].publicKey], { timeoutMs: 120_000 })).store
    }
    for (const p of Object.values(large)) await nix.verifyPath(store, p)
    const unclean = lb.logs.slice(logStart).filter(isUncleanRequest)
    process.stderr.write(`after SIGKILL of node${victim + 1}: the client was done ${tookMs} ms later; ${unclean.length} request(s) not answered cleanly:\n${unclean.join('\n')}\n`)
    // The survivors took over the victim's share: a path it had admitted was served whole by another node.
    const victims = nodes[victim].logged('admitted').map((l) => hashPartOf(String(l.path))).filter((h) => largeHashes.has(h))
    const survivors = nodes.filter((_, i) => i !== victim)
    const takenOver = victims.filter((h) => survivors.some((n) => n.logs.some((l) => l.msg === 'request' && l.status === 200 && !l.aborted && String(l.path).startsWith(`/nar/${h}/`))))
    assert.ok(takenOver.length > 0, `no path of the killed node (${victims.join()}) was served by another node`)
    await nodes[victim].restart()
  })
})

describe('three nodes sharing a bucket (storage.s3) behind HAProxy', { skip: s3Skip }, () => {
  let s3: S3TestServer
  let upstream: StaticServer
  let nodes: NarthexProcess[]
  let lb: Balancer
  let netrc: string
  /** The node killed in the first test; the others are its survivors. */
  let victim = -1

  const withBucket = (bucket: string, config: Record<string, unknown>) => ({
    ...config,
    storage: { s3: { bucket, endpoint: s3.endpoint, region: s3.region } },
  })

  before(async () => {
    s3 = await startS3Server()
    // The nodes (children) find the bucket's credentials in the environment, as in production.
    Object.assign(process.env, s3.env)
    await s3.createBucket('narthex-shared')
    upstream = await startStaticServer(cacheDir)
    netrc = join(nix.dir, 'push-netrc')
    await writeFile(netrc, `machine 127.0.0.1 login ci password ${PUSH_TOKEN}\n`)
    const push = { tokens: [PUSH_TOKEN], publicKeys: [corpKey.publicKey], minSignatures: 1 }
    nodes = []
    // Absent answers are remembered for an hour: a push through the balancer must be served all the same.
    const cache = { negativeTtlMs: 3_600_000 }
    for (let i = 0; i < NODES; i++) nodes.push(await NarthexProcess.start(withBucket('narthex-shared', { ...nodeConfig(upstream), push, cache })))
    lb = await startHaproxy(nix.dir, nodes.map((n, i) => ({ name: `node${i + 1}`, url: n.url })))
  })

  after(async () => {
    await lb?.stop()
    for (const n of nodes ?? []) await n.cleanup()
    await upstream?.close()
    await s3?.stop()
  })

  /** Waits until `node` has uploaded every verified NAR to the bucket. */
  const uploaded = (node: NarthexProcess) => until('the node uploaded its NARs to the bucket', async () => (await metric(node, 'narthex_bucket_uploads_pending')) === 0, 30_000)

  test('the paths a dead node admitted are served by the others from the bucket, without asking the upstream', async () => {
    const first = await nix.substitute(lb.url, [small.p9], [nodes[0].publicKey])
    for (const p of Object.values(small)) await nix.verifyPath(first.store, p)
    // The victim: the node that admitted the most paths of the closure.
    const admitted = nodes.map((n) => n.logged('admitted').filter((l) => Object.values(small).includes(String(l.path))).map((l) => hashPartOf(String(l.path))))
    victim = admitted.reduce((best, a, i) => (a.length > admitted[best].length ? i : best), 0)
    assert.ok(admitted[victim].length > 0)
    for (const n of nodes) await fetchedBytes(n)
    await uploaded(nodes[victim])
    assert.ok((await metric(nodes[victim], 'narthex_bucket_uploaded_total')) > 0, 'the node uploaded nothing')

    await nodes[victim].stop('SIGKILL')
    const upstreamBefore = upstream.requests.length
    const logStart = lb.logs.length
    const started = Date.now()
    const second = await nix.substitute(lb.url, [small.p9], [nodes[0].publicKey])
    const tookMs = Date.now() - started
    for (const p of Object.values(small)) await nix.verifyPath(second.store, p)
    const unclean = lb.logs.slice(logStart).filter(isUncleanRequest)
    process.stderr.write(
      `survivors served the closure (${admitted[victim].length} of its 10 paths were node${victim + 1}'s) in ${tookMs} ms; ` +
        `${unclean.length} request(s) not answered cleanly:\n${unclean.join('\n')}\n`,
    )
    assert.deepEqual(upstream.requests.slice(upstreamBefore), [], 'the survivors asked the upstream for paths the bucket has')
    const survivors = nodes.filter((_, i) => i !== victim)
    for (const h of admitted[victim]) {
      assert.ok(survivors.some((n) => requested(n).some((r) => r.startsWith(`/nar/${h}/`))), `${h}: no survivor served the dead node's NAR`)
    }
  })

  test('a path pushed through one node is substituted through another', async () => {
    const [pusher, reader] = nodes.filter((_, i) => i !== victim)
    await nix.push(`${pusher.url}?secret-key=${corpKey.secretFile}`, [others.pushed], { 'netrc-file': netrc })
    await uploaded(pusher)
    const upstreamBefore = upstream.requests.length
    const { store } = await nix.substitute(reader.url, [others.pushed], [reader.publicKey])
    for (const p of [others['pushed-base'], others.pushed]) await nix.verifyPath(store, p)
    assert.ok(reader.logged('followed the bucket').some((l) => String(l.path) === others.pushed), 'the reader did not find the pushed path in the bucket')
    assert.deepEqual(
      upstream.requests.slice(upstreamBefore).filter((r) => r.url.includes(hashPartOf(others.pushed))),
      [],
      'the reader asked the upstream for a pushed path',
    )
  })

  test('a push through the balancer goes to one node, and the balancer then serves it', async () => {
    const logStart = lb.logs.length
    await nix.push(`${lb.url}?secret-key=${corpKey.secretFile}`, [others['pushed-lb']], { 'netrc-file': netrc })
    const puts = lb.logs.slice(logStart).filter((l) => l.includes('"PUT '))
    const pushNodes = new Set(puts.map((l) => /narthex_push\/(\S+)/.exec(l)?.[1]))
    assert.ok(puts.length >= 2, `the push sent ${puts.length} PUTs`)
    assert.equal(pushNodes.size, 1, `the PUTs of one push went to ${[...pushNodes].join(', ')}`)
    assert.ok(!pushNodes.has(`node${victim + 1}`), 'a PUT went to the dead node')
    for (const n of nodes.filter((_, i) => i !== victim)) await uploaded(n)
    // nix copy --to asked the balancer for the path's narinfo first; the node its hash part goes to
    // answered 404 and remembers that, but a remembered absence still looks in the bucket.
    const { store } = await nix.substitute(lb.url, [others['pushed-lb']], [nodes[0].publicKey])
    for (const p of [others['pushed-base'], others['pushed-lb']]) await nix.verifyPath(store, p)
  })
})

describe('two nodes sharing a bucket, offered different NarHashes for one path', { skip: s3Skip }, () => {
  let s3: S3TestServer
  let honest: StaticServer
  let forged: StaticServer
  let nodes: NarthexProcess[]

  before(async () => {
    s3 = await startS3Server()
    Object.assign(process.env, s3.env)
    await s3.createBucket('narthex-contested')
    honest = await startStaticServer(cacheDir)
    forged = await startStaticServer(forgedDir)
    const storage = { s3: { bucket: 'narthex-contested', endpoint: s3.endpoint, region: s3.region } }
    nodes = [await NarthexProcess.start({ ...nodeConfig(honest), storage }), await NarthexProcess.start({ ...nodeConfig(forged), storage })]
  })

  after(async () => {
    for (const n of nodes ?? []) await n.cleanup()
    await honest?.close()
    await forged?.close()
    await s3?.stop()
  })

  test('asked at once, the node whose upstream answers last follows the bucket: one NarHash is admitted, and both nodes serve it', async () => {
    const h = hashPartOf(others.contested)
    // Both nodes miss in the bucket and ask their upstreams; the first node's answer comes a second
    // later, so the second node's pin is in the bucket by the time the first one creates its own.
    // Not two creates at the same instant: the test S3 server (Swift's s3api) can let both of two
    // simultaneous conditional creates of one key succeed, which S3 does not (docs/SCALE-OUT.md).
    honest.fault = (req) => (req.url?.endsWith('.narinfo') ? { kind: 'delayHeaders', ms: 1000 } : undefined)
    const answers = await Promise.all(nodes.map((n) => fetch(`${n.url}/${h}.narinfo`).then(async (r) => ({ status: r.status, text: await r.text() }))))
    honest.fault = undefined
    const served = answers.filter((a) => a.status === 200).map((a) => parseNarInfo(a.text))
    const logs = () => JSON.stringify(nodes.map((n) => n.logs.filter((l) => /admitted|bucket/.test(l.msg)).map((l) => l.msg)))
    assert.ok(served.length > 0, `neither node admitted the path: ${answers.map((a) => a.status).join()}`)
    const narHashes = new Set(served.map((i) => i.narHash.digest.toString('hex')))
    assert.equal(narHashes.size, 1, `the two nodes admitted different NarHashes for one path: ${logs()}`)
    const [pinned] = narHashes

    // The node that lost follows the bucket: it serves the winner's NAR once the winner uploaded it
    // (its own upstream offers only the other NarHash; before the upload it answers 503).
    const followers = nodes.filter((n) => n.logged('the bucket pins another NarHash').length > 0)
    const winners = nodes.filter((n) => !followers.includes(n))
    assert.deepEqual(followers, [nodes[0]], `the node offered the NarHash pinned second did not follow the bucket: ${logs()}`)
    for (const n of [...winners, ...followers]) {
      const again = await fetch(`${n.url}/${h}.narinfo`)
      assert.equal(again.status, 200, `${n.url} does not serve the path the bucket pins`)
      const info = parseNarInfo(await again.text())
      assert.equal(info.narHash.digest.toString('hex'), pinned, `${n.url} serves another NarHash than the bucket pins`)
      const res = await fetch(`${n.url}/${info.url}`)
      const nar = Buffer.from(await res.arrayBuffer())
      assert.equal(res.status, 200, `${n.url} did not serve the pinned path's NAR: ${nar.toString('utf8', 0, 200)}`)
      assert.equal(sha256Of(nar).digest.toString('hex'), pinned, `${n.url} served a NAR that is not the pinned one`)
      await fetchedBytes(n)
      await until('the node uploaded its NARs to the bucket', async () => (await metric(n, 'narthex_bucket_uploads_pending')) === 0, 30_000)
    }
    const { store } = await nix.substitute(followers[0].url, [others.contested], [followers[0].publicKey])
    await nix.verifyPath(store, others.contested)
    process.stderr.write(`contested path: narinfo answers ${answers.map((a) => a.status).join(', ')}; the first node was offered the other NarHash and followed the bucket\n`)
  })
})
