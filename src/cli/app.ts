/**
 * Assembles a running narthex from a configuration: store, upstreams, policy,
 * cache and HTTP server, and takes them down again in order.
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import type { Logger } from 'pino'
import { applyDenyToStore, bucketNarSource, BucketNarInfos, Cache, Metrics, PushReceiver, type DenySweep } from '../cache/index.js'
import type { Config } from '../config/index.js'
import { compilePolicy, withoutDeniedKeys, type Policy } from '../policy/index.js'
import { formatCacheInfo, formatPublicKey, parsePublicKey, STORE_DIR, toPublicKey, type SecretKey } from '../protocol/index.js'
import { AccessControl, createNarthexServer, warmHttp, warmUpstreamClient, type MetricsSnapshot, type StatusSources, type TokenSource } from '../server/index.js'
import { AuditLog, Bucket, readAuditTail, replayAuditOutbox, startVerifyThreads, Store, UploadQueue } from '../store/index.js'
import { Upstream } from '../upstream/index.js'
import { loadOrCreateSigningKeys } from './keys.js'
import { splitListen } from './log.js'
import { s3SdkNodeNotice } from '../s3-client.js'

export { createLogger, splitListen } from './log.js'

/** A running narthex. */
export interface Narthex {
  readonly server: Server
  readonly cache: Cache
  readonly store: Store
  readonly url: string
  readonly signingKey: SecretKey
  /** narthex's public key in Nix's format (the first signing key's). */
  readonly publicKey: string
  /** Every signing key's public key, in `signingKeyFile` order. */
  readonly publicKeys: readonly string[]
  /** Reads the upstream credentials and client token files again (SIGHUP); nothing else. */
  reloadCredentials(): void
  /** Stops accepting, aborts downloads, waits for responses (up to `graceMs`), closes the store. */
  close(graceMs?: number): Promise<void>
}

/** The parts of narthex below the HTTP server, opened on one data directory. */
export interface Core {
  readonly store: Store
  readonly cache: Cache
  readonly audit: AuditLog
  readonly upstreams: readonly Upstream[]
  readonly metrics: Metrics
  /** The compiled trust policy (rules and deny lists). */
  readonly policy: Policy
  /** The first signing key. */
  readonly signingKey: SecretKey
  /** Every signing key, in `signingKeyFile` order; each signs what narthex serves. */
  readonly signingKeys: readonly SecretKey[]
  /** The first signing key's public key in Nix's format. */
  readonly publicKey: string
  /** Every signing key's public key in Nix's format (what clients may trust). */
  readonly publicKeys: readonly string[]
  /** Settles once the deny lists were applied to the stored narinfos (started on open; runs while serving). */
  readonly denyApplied: Promise<DenySweep>
  /** The uploads of verified NARs to the bucket (storage.s3 only). */
  readonly uploads?: UploadQueue | undefined
  /** Aborts downloads, closes the upstream pools and the store. */
  close(): Promise<void>
}

/**
 * Opens the store (repairing what a crash left), the audit log, the upstreams
 * and the cache: everything `serve`, `mirror`, `export` and `import` share.
 * @throws NarthexError STORE_IO when the data directory is in use by another narthex.
 */
export async function openCore(config: Config, log: Logger, overrides: { prefetch?: boolean } = {}): Promise<Core> {
  const { keys: signingKeys, created } = loadOrCreateSigningKeys(config.signingKeyFiles ?? [config.signingKeyFile], config.signingKeyName)
  const signingKey = signingKeys[0]
  const publicKeys = signingKeys.map((k) => formatPublicKey(toPublicKey(k)))
  const publicKey = publicKeys[0]
  if (created) log.info({ file: config.signingKeyFile, publicKey }, 'created a new signing key')
  // After an unclean stop the index is compared with the NAR files while narthex already serves
  // (the index only names files that were durable first); after a clean one nothing is scanned.
  const opened = Date.now()
  const bucket = config.storage.s3 ? await Bucket.open(config.storage.s3) : undefined
  if (config.storage.s3 || config.upstreams.some((u) => u.url.startsWith('s3:'))) {
    const notice = s3SdkNodeNotice()
    if (notice !== undefined) log.info(notice)
  }
  const { store, recovery } = await Store.open(config.dataDir, { repair: 'background', uploadToBucket: bucket !== undefined })
  if (!recovery.clean) log.warn({ tempFilesRemoved: recovery.tempFilesRemoved }, 'the last stop was not clean: checking the store in the background')
  store.repaired.then(
    (report) => {
      if (!report.scanned) return
      log.info({ ...report, strayFiles: report.strayFiles.length, durationMs: Date.now() - opened }, 'store checked after an unclean stop')
      if (report.strayFiles.length > 0) {
        log.warn({ strayFiles: report.strayFiles.slice(0, 20), count: report.strayFiles.length }, 'left alone files under nar/ that are not NAR files of this store')
      }
    },
    (err: unknown) => log.error({ err: (err as Error).message }, 'cannot check the store after an unclean stop'),
  )
  const audit = await AuditLog.open(config.dataDir, {
    signingKey,
    onCheckpointError: (err) => log.warn({ err: (err as Error).message }, 'cannot write the audit checkpoint'),
  })
  if (audit.tornTail) log.warn(audit.tornTail, 'set aside the torn last line of the audit log (a crash mid-append)')
  const replay = await replayAuditOutbox(store, audit)
  if (replay.appended + replay.alreadyLogged > 0) log.warn(replay, 'reconciled the audit log with the admissions an unclean stop interrupted')
  const onCredentialsRejected = (upstream: string, status: number, message: string) => log.error({ upstream, status }, message)
  const upstreams = config.upstreams.map((u) => new Upstream(u, { onCredentialsRejected }))
  for (const u of upstreams) for (const w of u.credentialWarnings) log.warn({ upstream: u.name }, w)
  const metrics = new Metrics({ processMetrics: true })
  const policy = compilePolicy(config)
  const uploads = bucket && new UploadQueue(store, bucket, log)
  const bucketNars = config.storage.s3 && bucketNarSource(config.storage.s3, { onCredentialsRejected })
  if (bucket) {
    writeCacheInfo(bucket, config.priority, log)
    const left = await uploads!.start()
    if (left > 0) log.info({ nars: left }, 'uploading the NARs an earlier run left to upload to the bucket')
  }
  const cache = new Cache({
    store,
    upstreams,
    policy,
    signingKeys,
    log,
    metrics,
    audit,
    settings: {
      negativeTtlMs: config.cache.negativeTtlMs,
      unavailableTtlMs: config.cache.unavailableTtlMs,
      narinfoLruEntries: config.cache.narinfoLruEntries,
      prefetchReferences: overrides.prefetch ?? config.prefetch.references,
      prefetchNars: overrides.prefetch === false ? false : config.prefetch.nars,
      prefetchMaxInFlight: config.prefetch.maxInFlight,
      prefetchMaxNarsInFlight: config.prefetch.maxNarsInFlight,
      prefetchMaxBytesAhead: config.prefetch.maxBytesAhead,
      maxStoreBytes: config.storage.maxSize,
    },
    bucket: bucket && { narinfos: new BucketNarInfos(bucket, signingKeys.map(toPublicKey)), nars: bucketNars },
  })
  // Bounded by one walk of the narinfo index; the resolver checks every record it serves meanwhile.
  const stopDeny = new AbortController()
  const denyApplied = applyDenyToStore({ store, policy, audit, log, onDropped: (hashPart) => cache.forget(hashPart) }, stopDeny.signal).then(
    (sweep) => {
      if (sweep.dropped.length > 0) log.warn({ checked: sweep.checked, dropped: sweep.dropped.length }, 'deny lists applied to the store')
      return sweep
    },
    (err: unknown) => {
      log.error({ err: (err as Error).message }, 'cannot apply the deny lists to the store (denied paths are still refused when asked for)')
      return { checked: 0, dropped: [] }
    },
  )
  return {
    store,
    cache,
    audit,
    upstreams,
    metrics,
    policy,
    signingKey,
    signingKeys,
    publicKey,
    publicKeys,
    denyApplied,
    uploads,
    async close() {
      stopDeny.abort()
      await denyApplied
      await cache.close()
      await uploads?.close()
      await Promise.all([...upstreams, ...(bucketNars ? [bucketNars] : [])].map((u) => u.close()))
      await store.close()
      bucket?.close()
    },
  }
}

/**
 * Writes the bucket's `nix-cache-info` unless it has one, so Nix can read the
 * bucket as a binary cache; retried in the background while the bucket is down.
 */
function writeCacheInfo(bucket: Bucket, priority: number, log: Logger): void {
  const text = formatCacheInfo({ storeDir: STORE_DIR, wantMassQuery: true, priority })
  const attempt = (delayMs: number) =>
    bucket.createIfAbsent('nix-cache-info', text).catch((err: unknown) => {
      log.warn({ err: (err as Error).message, retryInMs: delayMs }, 'cannot write nix-cache-info to the bucket')
      setTimeout(() => void attempt(Math.min(delayMs * 2, 300_000)), delayMs).unref()
    })
  void attempt(5_000)
}

/** Options of {@link startNarthex}. */
export interface StartOptions {
  /** Log the "narthex is serving" line (the cluster logs its own). */
  readonly announce?: boolean
  /** The metrics of the worker processes, summed with the core's on `/metrics` and the status page. */
  readonly gatherWorkers?: () => Promise<MetricsSnapshot[]>
}

// Audit decisions the status page lists: what an operator looks into, not the admissions.
const ROUTINE_DECISIONS = new Set(['admit', 'push', 'import'])

/**
 * Keeps the store's entry counts for the metrics without walking the index on
 * every scrape: a walk starts when the last is older than 5 s, or than 50 times
 * its own duration on a large store; until it ends the previous count is shown.
 */
function storeCounter(store: Store, log: Logger): () => { paths: number; narFiles: number; pinned: number } | undefined {
  let counts: { paths: number; narFiles: number; pinned: number } | undefined
  let countedAt = 0
  let tookMs = 0
  let counting = false
  return () => {
    if (!counting && Date.now() - countedAt > Math.max(5_000, 50 * tookMs)) {
      counting = true
      const started = Date.now()
      store
        .countEntries()
        .then((c) => {
          counts = c
          countedAt = Date.now()
          tookMs = countedAt - started
        })
        .catch((err) => log.warn({ err: (err as Error).message }, 'cannot count the store entries'))
        .finally(() => {
          counting = false
        })
    }
    return counts
  }
}

/** Opens everything and starts listening. */
export async function startNarthex(config: Config, log: Logger, options: StartOptions = {}): Promise<Narthex> {
  const core = await openCore(config, log)
  // Started ahead of the first download, so a thread's start-up never delays a client's first
  // byte (other commands start them on first use, if ever).
  startVerifyThreads()
  const { store, cache, audit, upstreams, metrics, policy, signingKey, publicKey, publicKeys, uploads } = core
  const access = new AccessControl(config.access.read === 'tokens', accessTokenSources(config))
  for (const w of access.warnings) log.warn(w)
  // Before listening: the first client's narinfo would otherwise pay for compiling the cold path,
  // and its request for compiling node's HTTP server code.
  await cache.warmUp().catch((err) => log.warn({ err: (err as Error).message }, 'warm-up failed'))
  await warmHttp().catch((err) => log.warn({ err: (err as Error).message }, 'HTTP warm-up failed'))
  const push = config.push && {
    receiver: new PushReceiver({
      store,
      audit,
      log,
      settings: { publicKeys: withoutDeniedKeys(policy, config.push.publicKeys.map(parsePublicKey)), minSignatures: config.push.minSignatures, maxNarBytes: config.push.maxNarSize },
      onAdmitted: (hashPart) => cache.forget(hashPart),
      pinInBucket: uploads && ((hashPart, record) => cache.pinInBucket(hashPart, record)),
    }),
  }
  const storeCounts = storeCounter(store, log)
  // Counted soon, so that the first page and scrape have figures; not at once: on a large store
  // the count walks the whole index, which the first clients' requests should not wait behind.
  setTimeout(storeCounts, 3_000).unref()
  metrics.watch({ storeBytes: () => store.totalBytes, storeCounts, ...(uploads ? { bucketUploads: () => uploads.figures } : {}) })
  const status: StatusSources = {
    publicKeys,
    publicUrl: config.publicUrl,
    maxStoreBytes: config.storage.maxSize,
    workers: config.workers,
    upstreams: () => upstreams.map((u) => u.health()),
    lastUpstreamError: (name) => metrics.lastUpstreamError(name),
    recentEvents: async () =>
      (await readAuditTail(audit.path, (e) => !ROUTINE_DECISIONS.has(e.decision), { limit: 20 })).map((e) => ({
        time: e.time,
        decision: e.decision,
        storePath: e.storePath,
        reason: e.reason,
        message: e.message,
        upstreams: e.upstreams,
      })),
  }
  const server = createNarthexServer({
    cache,
    metrics,
    log,
    priority: config.priority,
    publicKey,
    publicKeys,
    push,
    access,
    requestLog: config.log.requests,
    status,
    gatherWorkers: options.gatherWorkers,
    auditCheckpoint: () => audit.checkpoint,
  })
  const { host, port } = splitListen(config.listen)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address() as AddressInfo
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`
  if (options.announce !== false) log.info({ url, dataDir: config.dataDir, upstreams: upstreams.map((u) => u.name), publicKey, publicKeys }, 'narthex is serving')
  // The upstream client is loaded at its first use (undici.ts), which a start answering from
  // the store does not wait for; soon after, so that the first cold request does not either.
  setTimeout(() => void warmUpstreamClient().catch((err: unknown) => log.debug({ err: (err as Error).message }, 'upstream client warm-up failed')), 200).unref()

  // Last-use times reach the index once a minute (and on close); the size limit is checked then too.
  const housekeeping = setInterval(() => {
    store.flushAccess().catch((err) => log.warn({ err: (err as Error).message }, 'cannot record NAR use times'))
    cache.collectGarbageIfNeeded()
  }, 60_000)
  housekeeping.unref()
  cache.collectGarbageIfNeeded()

  let closing: Promise<void> | undefined
  const close = (graceMs = 10_000) =>
    (closing ??= (async () => {
      clearInterval(housekeeping)
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      // Aborting the downloads first cuts the clients waiting on them.
      await cache.close()
      const timer = setTimeout(() => server.closeAllConnections(), graceMs)
      await closed
      clearTimeout(timer)
      await core.close()
    })())
  const reloadCredentials = () => {
    for (const u of upstreams) {
      try {
        for (const w of u.reloadCredentials()) log.warn({ upstream: u.name }, w)
      } catch (err) {
        log.error({ upstream: u.name, err: (err as Error).message }, 'cannot reload the upstream credentials; keeping the old ones')
      }
    }
    try {
      for (const w of access.reload()) log.warn(w)
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot reload the client tokens; keeping the old ones')
    }
    log.info({ upstreams: upstreams.filter((u) => u.hasCredentials).map((u) => u.name) }, 'reloaded credentials')
  }
  return { server, cache, store, url, signingKey, publicKey, publicKeys, reloadCredentials, close }
}

/**
 * The client tokens of a configuration: `access.tokens` (secrets in files) and
 * the older inline `push.tokens`, which stay push-only tokens named
 * `push.tokens[N]`.
 */
export function accessTokenSources(config: Pick<Config, 'access' | 'push'>): TokenSource[] {
  return [
    ...config.access.tokens.map((t) => ({ name: t.name, secretFile: t.secretFile, scopes: t.scopes, pushMatch: t.pushMatch })),
    ...(config.push?.tokens ?? []).map((secret, i) => ({ name: `push.tokens[${i}]`, secret, scopes: ['push' as const] })),
  ]
}
