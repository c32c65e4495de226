/**
 * narthex nodes sharing a bucket, built in-process: each a real {@link Store}
 * (uploading to the bucket), {@link AuditLog}, {@link Cache} and
 * {@link UploadQueue}, wired as src/cli/app.ts wires them, in front of fake
 * upstreams served by the static server. The bucket lives on the real S3
 * server of test/helpers/s3-server.ts.
 *
 * @module
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { bucketNarSource, BucketNarInfos, Cache, Metrics, PushReceiver } from '../../src/cache/index.js'
import { compilePolicy, type PolicyInput } from '../../src/policy/index.js'
import { formatPublicKey, generateSecretKey, toPublicKey, type S3Location, type SecretKey } from '../../src/protocol/index.js'
import { AuditLog, Bucket, Store, UploadQueue, type AuditEntry } from '../../src/store/index.js'
import { Upstream } from '../../src/upstream/index.js'
import { flushedAuditEntries } from '../helpers/fake-cache.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'
import type { S3TestServer } from '../helpers/s3-server.js'

/** A fake upstream: a cache directory behind the static server. */
export interface Fake {
  readonly name: string
  readonly dir: string
  readonly key: SecretKey
  readonly server: StaticServer
}

/** One node. */
export interface BucketNode {
  readonly cache: Cache
  readonly store: Store
  readonly uploads: UploadQueue
  readonly push: PushReceiver
  readonly dataDir: string
  auditEntries(): Promise<AuditEntry[]>
  close(): Promise<void>
}

/** Fake upstreams (empty) in a fresh directory. */
export async function startFakes(root: string, names: readonly string[]): Promise<Fake[]> {
  const fakes: Fake[] = []
  for (const name of names) {
    const dir = join(root, `upstream-${name}`)
    await mkdir(join(dir, 'nar'), { recursive: true })
    fakes.push({ name, dir, key: generateSecretKey(name), server: await startStaticServer(dir) })
  }
  return fakes
}

/** The location of `bucket` on the test server, with its credentials put in this process's environment (the AWS chain reads them there). */
export function locationOn(server: S3TestServer, bucket: string, prefix = ''): S3Location {
  Object.assign(process.env, server.env)
  return { bucket, prefix, endpoint: server.endpoint, region: server.region, forcePathStyle: true }
}

/** Options of {@link startNode}. */
export interface NodeOptions {
  readonly fakes: readonly Fake[]
  readonly location: S3Location
  /** narthex's signing key, shared by the nodes. */
  readonly key: SecretKey
  /** Default: one rule, `*` from every fake, one signature. */
  readonly rules?: PolicyInput['rules']
  readonly dataDir?: string
  readonly pushKeys?: readonly SecretKey[]
  /** How long an absent answer is remembered; default 0 (not at all). */
  readonly negativeTtlMs?: number
}

/** Opens a node on its own data directory (or `options.dataDir`). */
export async function startNode(options: NodeOptions): Promise<BucketNode> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'narthex-bucket-node-')))
  const log = pino({ level: 'silent' })
  const { fakes, location, key } = options
  const upstreams = fakes.map(
    (f) => new Upstream({ name: f.name, url: f.server.url, timeoutMs: 2000, retries: 0, maxConnections: 8, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 30_000 }),
  )
  const policy = compilePolicy({
    upstreams: fakes.map((f) => ({ name: f.name, publicKeys: [formatPublicKey(toPublicKey(f.key))] })),
    rules: options.rules ?? [{ match: ['*'], upstreams: fakes.map((f) => f.name), minSignatures: 1 }],
  })
  const bucket = await Bucket.open(location)
  const { store } = await Store.open(dataDir, { uploadToBucket: true })
  const audit = await AuditLog.open(dataDir)
  const uploads = new UploadQueue(store, bucket, log, { minBackoffMs: 100, maxBackoffMs: 500 })
  await uploads.start()
  const nars = bucketNarSource(location)
  const cache = new Cache({
    store,
    upstreams,
    policy,
    signingKeys: [key],
    log,
    metrics: new Metrics(),
    audit,
    settings: { negativeTtlMs: options.negativeTtlMs ?? 0, unavailableTtlMs: 0, narinfoLruEntries: 1000, prefetchReferences: false, prefetchNars: false, prefetchMaxInFlight: 4 },
    bucket: { narinfos: new BucketNarInfos(bucket, [toPublicKey(key)]), nars },
  })
  const push = new PushReceiver({
    store,
    audit,
    log,
    settings: { publicKeys: (options.pushKeys ?? []).map(toPublicKey), minSignatures: 1, maxNarBytes: 1 << 30 },
    onAdmitted: (hashPart) => cache.forget(hashPart),
    pinInBucket: (hashPart, record) => cache.pinInBucket(hashPart, record),
  })
  let closing: Promise<void> | undefined
  return {
    cache,
    store,
    uploads,
    push,
    dataDir,
    auditEntries: () => flushedAuditEntries(audit, dataDir),
    close() {
      closing ??= (async () => {
        await cache.close()
        await uploads.close()
        await Promise.all([...upstreams, nars].map((u) => u.close()))
        await store.close()
        bucket.close()
      })()
      return closing
    },
  }
}

/** Removes a node's data directory (after `close`). */
export async function removeNode(node: BucketNode): Promise<void> {
  await rm(node.dataDir, { recursive: true, force: true })
}
