/**
 * Assembles a running narthex from a configuration: store, upstreams, policy,
 * cache and HTTP server, and takes them down again in order.
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import type { Logger } from 'pino'
import { Cache, Metrics, PushReceiver } from '../cache/index.js'
import type { Config } from '../config/index.js'
import { compilePolicy, withoutDeniedKeys, type Policy } from '../policy/index.js'
import { formatPublicKey, parsePublicKey, toPublicKey, type SecretKey } from '../protocol/index.js'
import { createNarthexServer } from '../server/index.js'
import { AuditLog, startVerifyThreads, Store } from '../store/index.js'
import { Upstream } from '../upstream/index.js'
import { loadOrCreateSigningKey } from './keys.js'
import { splitListen } from './log.js'

export { createLogger, splitListen } from './log.js'

/** A running narthex. */
export interface Narthex {
  readonly server: Server
  readonly cache: Cache
  readonly store: Store
  readonly url: string
  readonly signingKey: SecretKey
  /** narthex's public key in Nix's format. */
  readonly publicKey: string
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
  readonly signingKey: SecretKey
  readonly publicKey: string
  /** Aborts downloads, closes the upstream pools and the store. */
  close(): Promise<void>
}

/**
 * Opens the store (repairing what a crash left), the audit log, the upstreams
 * and the cache: everything `serve`, `mirror`, `export` and `import` share.
 * @throws NarthexError STORE_IO when the data directory is in use by another narthex.
 */
export async function openCore(config: Config, log: Logger, overrides: { prefetch?: boolean } = {}): Promise<Core> {
  const { key: signingKey, created } = loadOrCreateSigningKey(config.signingKeyFile, config.signingKeyName)
  const publicKey = formatPublicKey(toPublicKey(signingKey))
  if (created) log.info({ file: config.signingKeyFile, publicKey }, 'created a new signing key')
  // After an unclean stop the index is compared with the NAR files while narthex already serves
  // (the index only names files that were durable first); after a clean one nothing is scanned.
  const opened = Date.now()
  const { store, recovery } = await Store.open(config.dataDir, { repair: 'background' })
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
  const audit = await AuditLog.open(config.dataDir)
  const upstreams = config.upstreams.map((u) => new Upstream(u))
  const metrics = new Metrics({ processMetrics: true })
  const policy = compilePolicy(config)
  const cache = new Cache({
    store,
    upstreams,
    policy,
    signingKey,
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
  })
  return {
    store,
    cache,
    audit,
    upstreams,
    metrics,
    policy,
    signingKey,
    publicKey,
    async close() {
      await cache.close()
      await Promise.all(upstreams.map((u) => u.close()))
      await store.close()
    },
  }
}

/** Opens everything and starts listening. */
export async function startNarthex(config: Config, log: Logger, options: { announce?: boolean } = {}): Promise<Narthex> {
  const core = await openCore(config, log)
  // Started ahead of the first download, so a thread's start-up never delays a client's first
  // byte (other commands start them on first use, if ever).
  startVerifyThreads()
  const { store, cache, audit, upstreams, metrics, policy, signingKey, publicKey } = core
  // Before listening: the first client's narinfo would otherwise pay for compiling the cold path.
  await cache.warmUp().catch((err) => log.warn({ err: (err as Error).message }, 'warm-up failed'))
  const push = config.push && {
    tokens: config.push.tokens,
    receiver: new PushReceiver({
      store,
      audit,
      log,
      settings: { publicKeys: withoutDeniedKeys(policy, config.push.publicKeys.map(parsePublicKey)), minSignatures: config.push.minSignatures, maxNarBytes: config.push.maxNarSize },
      onAdmitted: (hashPart) => cache.forget(hashPart),
    }),
  }
  const server = createNarthexServer({ cache, metrics, log, priority: config.priority, publicKey, push })
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
  if (options.announce !== false) log.info({ url, dataDir: config.dataDir, upstreams: upstreams.map((u) => u.name), publicKey }, 'narthex is serving')

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
  return { server, cache, store, url, signingKey, publicKey, close }
}
