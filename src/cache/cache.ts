/**
 * narthex's use cases: answer a narinfo (from the store, or by asking the
 * upstreams and admitting per policy) and answer a NAR (from the store, or by a
 * single verified download shared by every client that asks meanwhile).
 */
import type { Readable } from 'node:stream'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { NarthexError, isNarthexError } from '../errors.js'
import { decide, describeRule, ruleFor, upstreamsToAsk, type Decision, type Policy, type UpstreamAnswer } from '../policy/index.js'
import {
  fingerprintNarInfo,
  formatNarInfo,
  formatNixHash,
  formatStorePath,
  narFileNameOf,
  parseNarFileName,
  parseNarInfo,
  parseNixHash,
  parseStorePathBase,
  signNarInfo,
  type Compression,
  type NarInfo,
  type SecretKey,
} from '../protocol/index.js'
import { supportedCompressions, type AuditLog, type NarInfoRecord, type SourceRecord, type Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'
import type { Metrics } from './metrics.js'
import { askUpstreams } from './ask.js'
import { NarDownload, type NarFollower } from './nar-download.js'

/** The answer to a narinfo request. */
export type NarInfoAnswer =
  | { readonly kind: 'found'; readonly text: string }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** The answer to a NAR request. */
export type NarAnswer =
  | { readonly kind: 'stored'; readonly path: string; readonly size: number }
  /** A download in progress, followed from its temp file; `close()` it when not sending it. */
  | { readonly kind: 'following'; readonly follower: NarFollower; readonly size: number | undefined }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** The answer to a build-log request: an upstream's body passed through. */
export type LogAnswer =
  | { readonly kind: 'streaming'; readonly stream: Readable; readonly size: number | undefined }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** Settings of the cache use cases (the config's `cache` and `prefetch` sections). */
export interface CacheSettings {
  readonly negativeTtlMs: number
  readonly unavailableTtlMs: number
  readonly narinfoLruEntries: number
  readonly prefetchReferences: boolean
  readonly prefetchNars: boolean
  readonly prefetchMaxInFlight: number
  /** Evict least-recently-used NARs when the store grows past this (storage.maxSize). */
  readonly maxStoreBytes?: number | undefined
  /** How long a source whose NAR failed verification is skipped. */
  readonly failedSourceTtlMs?: number
}

/** What a {@link Cache} is built from. */
export interface CacheDeps {
  readonly store: Store
  readonly upstreams: readonly Upstream[]
  readonly policy: Policy
  readonly signingKey: SecretKey
  readonly log: Logger
  readonly metrics: Metrics
  readonly audit: AuditLog
  readonly settings: CacheSettings
}

type Negative = { readonly kind: 'absent' } | { readonly kind: 'unavailable'; readonly retryAfterS: number }

// A finished download stays findable this long, so a request that looked at the
// store just before the commit joins it instead of starting a second download.
const DONE_LINGER_MS = 10_000

// How long a source that failed for a transient reason (timeout, reset) is skipped.
const TRANSIENT_SKIP_MS = 5_000

// Failures that prove a source's bytes wrong (as opposed to it being unreachable).
const VERIFICATION_FAILURES = new Set(['HASH_MISMATCH', 'SIZE_MISMATCH', 'NAR_INVALID'])

/** The admitted narinfo with a source's unsigned fields: its URL, compression, FileHash and FileSize. */
function describedBy(info: NarInfo, source: SourceRecord): NarInfo {
  return {
    ...info,
    url: source.url,
    compression: source.compression,
    fileHash: source.fileHash ? parseNixHash(source.fileHash) : undefined,
    fileSize: source.fileSize,
  }
}

/** The narthex cache: store, upstreams and policy behind the two questions clients ask. */
export class Cache {
  readonly #d: CacheDeps
  readonly #upstreams: Map<string, Upstream>
  readonly #served: LRUCache<string, string>
  /** NAR file name → the hash part admitted with it and its record: a NAR request after its narinfo reads no index. */
  readonly #admitted: LRUCache<string, { hashPart: string; record: NarInfoRecord }>
  readonly #negative: LRUCache<string, Negative>
  readonly #resolving = new Map<string, Promise<NarInfoAnswer>>()
  readonly #downloads = new Map<string, NarDownload>()
  /** `<fileName> <upstream>` → the code of the failure that keeps that source skipped. */
  readonly #failedSources: LRUCache<string, string>
  readonly #supported: Set<string>
  readonly #prefetchQueue: string[] = []
  #prefetchActive = 0
  #gcRunning = false
  #closed = false

  constructor(deps: CacheDeps) {
    this.#d = deps
    this.#upstreams = new Map(deps.upstreams.map((u) => [u.name, u]))
    this.#served = new LRUCache({ max: Math.max(1, deps.settings.narinfoLruEntries) })
    this.#negative = new LRUCache({ max: 100_000, ttlAutopurge: false })
    this.#admitted = new LRUCache({ max: 10_000 })
    this.#supported = new Set(supportedCompressions())
    this.#failedSources = new LRUCache({ max: 10_000, ttl: deps.settings.failedSourceTtlMs ?? 600_000 })
  }

  /** The upstreams, for health reporting. */
  get upstreams(): readonly Upstream[] {
    return this.#d.upstreams
  }

  /** Downloads running now. */
  get downloadsInFlight(): number {
    return [...this.#downloads.values()].filter((d) => d.state === 'running').length
  }

  /**
   * Answers `GET /<hashPart>.narinfo`. Concurrent requests for one hash part
   * share one resolution.
   */
  async getNarInfo(hashPart: string): Promise<NarInfoAnswer> {
    const hot = this.#served.get(hashPart)
    if (hot !== undefined) {
      this.#d.metrics.narinfoLookups.inc({ outcome: 'hit' })
      return { kind: 'found', text: hot }
    }
    const negative = this.#negative.get(hashPart)
    if (negative) {
      this.#d.metrics.narinfoLookups.inc({ outcome: negative.kind })
      return negative
    }
    let pending = this.#resolving.get(hashPart)
    if (!pending) {
      pending = this.#resolve(hashPart).finally(() => this.#resolving.delete(hashPart))
      this.#resolving.set(hashPart, pending)
    }
    return pending
  }

  async #resolve(hashPart: string): Promise<NarInfoAnswer> {
    const record = await this.#d.store.getNarInfo(hashPart)
    if (record) {
      this.#d.metrics.narinfoLookups.inc({ outcome: 'hit' })
      return { kind: 'found', text: await this.#remember(hashPart, record) }
    }
    if (this.#closed) return { kind: 'unavailable', retryAfterS: 5 }
    const answers = await this.askUpstreams(hashPart)
    const firstHash = await this.#d.store.getFirstNarHash(hashPart)
    const decision = decide(this.#d.policy, hashPart, answers, firstHash ? parseNixHash(firstHash) : undefined)
    return this.#act(hashPart, decision)
  }

  /** Asks every upstream that may supply `hashPart` at once (see {@link askUpstreams}). */
  askUpstreams(hashPart: string): Promise<Map<string, UpstreamAnswer>> {
    return askUpstreams(this.#upstreams, upstreamsToAsk(this.#d.policy, hashPart), hashPart, this.#supported, this.#d.log, this.#d.metrics)
  }

  async #act(hashPart: string, decision: Decision): Promise<NarInfoAnswer> {
    const { metrics, log, settings } = this.#d
    switch (decision.kind) {
      case 'admit': {
        const info = decision.info
        const narHash = formatNixHash(info.narHash)
        const fileName = narFileNameOf(info)
        const sources: SourceRecord[] = []
        for (const s of decision.sources) {
          try {
            sources.push(this.#sourceOf(s.upstream, s.info))
          } catch (err) {
            log.warn({ upstream: s.upstream, hashPart, err: (err as Error).message }, 'ignoring a source with an unusable NAR URL')
          }
        }
        const record: NarInfoRecord = {
          narinfo: formatNarInfo(info),
          sources,
          rule: decision.rule.index,
          signers: decision.signers,
          admittedAt: Date.now(),
          origin: decision.sources[0]!.upstream,
        }
        await this.#d.store.putNarInfo(hashPart, fileName, narHash, record)
        this.#admitted.set(fileName, { hashPart, record })
        await this.#d.audit.append({
          decision: 'admit',
          storePath: formatStorePath(info.storePath),
          narHash,
          upstreams: decision.sources.map((s) => s.upstream),
          signers: decision.signers,
          rule: decision.rule.index,
        })
        metrics.narinfoLookups.inc({ outcome: 'admitted' })
        log.info({ path: formatStorePath(info.storePath), upstream: record.origin, signers: decision.signers, rule: describeRule(decision.rule) }, 'admitted')
        this.#negative.delete(hashPart)
        const text = await this.#remember(hashPart, record)
        this.#prefetch(info)
        return { kind: 'found', text }
      }
      case 'absent':
        metrics.narinfoLookups.inc({ outcome: 'absent' })
        this.#rememberAbsent(hashPart)
        return { kind: 'absent' }
      case 'unavailable': {
        metrics.narinfoLookups.inc({ outcome: 'unavailable' })
        const retryAfterS = Math.max(1, Math.ceil(settings.unavailableTtlMs / 1000))
        const answer = { kind: 'unavailable', retryAfterS } as const
        if (settings.unavailableTtlMs > 0) this.#negative.set(hashPart, answer, { ttl: settings.unavailableTtlMs })
        return answer
      }
      case 'refuse': {
        metrics.narinfoLookups.inc({ outcome: 'refused' })
        metrics.refusals.inc({ reason: decision.reason })
        const storePath = decision.info ? formatStorePath(decision.info.storePath) : hashPart
        log.warn({ path: storePath, reason: decision.reason, rule: decision.rule?.index }, `refused: ${decision.message}`)
        await this.#d.audit.append({
          decision: 'refuse',
          storePath,
          ...(decision.narHashes[0] ? { narHash: decision.narHashes[0] } : {}),
          ...(decision.rule ? { rule: decision.rule.index } : {}),
          reason: decision.reason,
          message: decision.message,
        })
        this.#rememberAbsent(hashPart)
        return { kind: 'absent' }
      }
    }
  }

  // A ttl of 0 means "no expiry" to the LRU; negativeTtlMs 0 means "do not remember".
  #rememberAbsent(hashPart: string): void {
    const ttl = this.#d.settings.negativeTtlMs
    if (ttl > 0) this.#negative.set(hashPart, { kind: 'absent' }, { ttl })
  }

  /**
   * Evicts least-recently-used NARs down to 90% of `maxStoreBytes` when the
   * store is larger; one collection at a time.
   */
  collectGarbageIfNeeded(): void {
    const max = this.#d.settings.maxStoreBytes
    if (max === undefined || this.#gcRunning || this.#d.store.totalBytes <= max) return
    this.#gcRunning = true
    const started = Date.now()
    this.#d.store
      .collectGarbage(Math.floor(max * 0.9))
      .then(({ evicted, freedBytes }) => {
        // A finished download still lingering for late joiners must not point them at an evicted file.
        for (const name of evicted) if (this.#downloads.get(name)?.state === 'done') this.#downloads.delete(name)
        this.#d.log.info({ evicted: evicted.length, freedBytes, totalBytes: this.#d.store.totalBytes, durationMs: Date.now() - started }, 'evicted least-recently-used NARs')
      })
      .catch((err) => this.#d.log.error({ err: (err as Error).message }, 'garbage collection failed'))
      .finally(() => {
        this.#gcRunning = false
      })
  }

  /**
   * Answers `GET /log/<drv>` (`nix log`): the first upstream that has the build
   * log, streamed through and not kept. Logs are not signed, so no policy
   * applies; every upstream is asked in config order.
   */
  async getLog(drvName: string): Promise<LogAnswer> {
    let unavailable = false
    for (const upstream of this.#d.upstreams) {
      try {
        const res = await upstream.openNar(`${upstream.baseUrl}/log/${drvName}`)
        return { kind: 'streaming', stream: res.body, size: res.contentLength }
      } catch (err) {
        if (!isNarthexError(err, 'NOT_FOUND')) unavailable = true
      }
    }
    return unavailable ? { kind: 'unavailable', retryAfterS: 10 } : { kind: 'absent' }
  }

  /** Drops remembered answers for a hash part (after a push admitted it). */
  forget(hashPart: string): void {
    this.#served.delete(hashPart)
    this.#negative.delete(hashPart)
  }

  /** Formats the narinfo clients get for a record, signs it, and keeps it in the LRU. */
  async #remember(hashPart: string, record: NarInfoRecord): Promise<string> {
    const text = await this.formatServed(record)
    this.#served.set(hashPart, text)
    return text
  }

  /**
   * The narinfo as narthex serves it: URL pointing at narthex's content-addressed
   * NAR name, file hash and size of the stored file when there is one, the
   * verified upstream signatures, and narthex's own.
   */
  async formatServed(record: NarInfoRecord): Promise<string> {
    const info = parseNarInfo(record.narinfo)
    const fileName = narFileNameOf(info)
    const stored = await this.#d.store.getNarFile(fileName)
    const served: NarInfo = {
      ...info,
      url: `nar/${fileName}`,
      ...(stored ? { fileHash: parseNixHash(stored.fileHash), fileSize: stored.fileSize } : {}),
    }
    return formatNarInfo(signNarInfo(served, this.#d.signingKey))
  }

  /** Queues the references of an admitted path for look-up ahead of the client. */
  #prefetch(info: NarInfo): void {
    const { settings } = this.#d
    if (!settings.prefetchReferences) return
    for (const ref of info.references) {
      const hashPart = parseStorePathBase(ref).hashPart
      if (hashPart === info.storePath.hashPart || this.#served.has(hashPart) || this.#resolving.has(hashPart)) continue
      if (this.#prefetchQueue.length < 10_000) this.#prefetchQueue.push(hashPart)
    }
    this.#pumpPrefetch()
  }

  #pumpPrefetch(): void {
    const { settings, log } = this.#d
    while (!this.#closed && this.#prefetchActive < settings.prefetchMaxInFlight && this.#prefetchQueue.length > 0) {
      const hashPart = this.#prefetchQueue.shift()!
      this.#prefetchActive++
      this.getNarInfo(hashPart)
        .then(async (answer) => {
          if (answer.kind === 'found' && settings.prefetchNars) {
            const info = parseNarInfo(answer.text)
            const nar = await this.getNar(info.url.slice('nar/'.length))
            if (nar.kind === 'following') nar.follower.close()
          }
        })
        .catch((err) => log.debug({ hashPart, err: (err as Error).message }, 'prefetch failed'))
        .finally(() => {
          this.#prefetchActive--
          this.#pumpPrefetch()
        })
    }
  }

  /**
   * Answers `GET /nar/<fileName>`: the stored file, or a stream that follows the
   * one download of it. A source that fails before sending anything is skipped
   * for the next one at once; one that fails midway aborts its clients and is
   * skipped for later requests.
   */
  async getNar(fileName: string): Promise<NarAnswer> {
    const parsed = parseNarFileName(fileName)
    if (!parsed) return { kind: 'absent' }
    const running = this.#downloads.get(fileName)
    if (running && running.state !== 'failed') {
      // Joined only once it has a byte: one whose source fails before that is
      // replaced by the next source below, as for the client that started it.
      await running.whenStarted()
      if ((running.state as NarDownload['state']) !== 'failed') return this.#follow(running)
    }
    const stored = await this.#d.store.getNarFile(fileName)
    if (stored) {
      this.#d.store.touch(fileName)
      return { kind: 'stored', path: this.#d.store.narPath(fileName), size: stored.fileSize }
    }
    const known = this.#admitted.get(fileName) ?? (await this.#admittedFromIndex(fileName))
    if (!known) return { kind: 'absent' }
    const { hashPart } = known
    let record: NarInfoRecord = known.record
    const info = parseNarInfo(record.narinfo)
    let allGone = true
    const tried = new Set<string>()
    for (let round = 0; round < 2; round++) {
      if (round === 1) {
        // Every known source failed: upstreams that could not be asked when the path was
        // admitted may offer the same fingerprint now.
        const refreshed: NarInfoRecord | undefined = this.#closed ? undefined : await this.#refreshSources(hashPart, record, fileName)
        if (!refreshed) break
        record = refreshed
      }
      for (const source of record.sources) {
        if (tried.has(source.upstream)) continue
        tried.add(source.upstream)
        if (source.compression !== parsed.compression) continue
        const failed = this.#failedSources.get(`${fileName} ${source.upstream}`)
        if (failed !== undefined) {
          // Skipped because it just failed: it could not deliver, which is not "gone".
          if (failed !== 'NOT_FOUND') allGone = false
          continue
        }
        const upstream = this.#upstreams.get(source.upstream)
        if (!upstream) continue
        // Re-checked with no await since the last look: joining beats a second download.
        const again = this.#downloads.get(fileName)
        const download = again && again.state !== 'failed' ? again : this.#start(fileName, info, source, upstream)
        await download.whenStarted()
        // Failed before this client got anything (at once, or right after its first bytes): next source.
        if (download.state === 'failed') {
          if (!isNarthexError(download.error, 'NOT_FOUND')) allGone = false
          continue
        }
        return this.#follow(download)
      }
    }
    if (this.#closed) return { kind: 'unavailable', retryAfterS: 5 }
    if (await this.#switchCompression(hashPart, record, fileName)) return { kind: 'unavailable', retryAfterS: 1 }
    return allGone ? { kind: 'absent' } : { kind: 'unavailable', retryAfterS: 10 }
  }

  /**
   * When every source of the served compression delivered bytes that failed
   * verification (their unsigned `Compression`, `URL` or `FileHash` was wrong),
   * but a source describes the same fingerprint in another compression, the
   * record switches to that one: the narinfo served from now on names the other
   * file. Clients that still hold the old narinfo get 503 for the old file.
   * @returns true when the record was switched.
   */
  async #switchCompression(hashPart: string, record: NarInfoRecord, fileName: string): Promise<boolean> {
    const info = parseNarInfo(record.narinfo)
    if (info.compression !== parseNarFileName(fileName)?.compression) return false
    const rejected = (compression: Compression, upstream: string) =>
      VERIFICATION_FAILURES.has(this.#failedSources.get(`${narFileNameOf({ narHash: info.narHash, compression })} ${upstream}`) ?? '')
    const same = record.sources.filter((s) => s.compression === info.compression)
    if (same.length === 0 || !same.every((s) => rejected(s.compression, s.upstream))) return false
    const other = record.sources.find(
      (s) => s.compression !== info.compression && this.#supported.has(s.compression) && this.#upstreams.has(s.upstream) && !rejected(s.compression, s.upstream),
    )
    if (!other) return false
    const switched = describedBy(info, other)
    const newFile = narFileNameOf({ narHash: info.narHash, compression: other.compression })
    await this.#d.store.putNarInfo(hashPart, newFile, formatNixHash(info.narHash), { ...record, narinfo: formatNarInfo(switched) })
    this.#served.delete(hashPart)
    this.#admitted.delete(fileName)
    this.#d.log.warn(
      { path: formatStorePath(info.storePath), from: fileName, to: newFile, upstream: other.upstream },
      'every source of the served compression failed verification; serving another compression from now on',
    )
    return true
  }

  async #admittedFromIndex(fileName: string): Promise<{ hashPart: string; record: NarInfoRecord } | undefined> {
    const hashParts = await this.#d.store.narInfosForFile(fileName)
    if (hashParts.length === 0) return undefined
    const record = await this.#d.store.getNarInfo(hashParts[0]!)
    return record ? { hashPart: hashParts[0]!, record } : undefined
  }

  /**
   * Asks the rule's upstreams again for an admitted path and adds, as new
   * sources, those offering exactly the admitted fingerprint. Returns the
   * updated record, or undefined when no new source turned up.
   */
  async #refreshSources(hashPart: string, record: NarInfoRecord, fileName: string): Promise<NarInfoRecord | undefined> {
    const info = parseNarInfo(record.narinfo)
    const rule = ruleFor(this.#d.policy, hashPart, info.storePath.name)
    if (!rule) return undefined
    const fingerprint = fingerprintNarInfo(info)
    const known = new Set(record.sources.map((s) => s.upstream))
    const answers = await this.askUpstreams(hashPart)
    const added: SourceRecord[] = []
    for (const name of rule.upstreams) {
      const a = answers.get(name)
      if (known.has(name) || a?.kind !== 'present' || fingerprintNarInfo(a.info) !== fingerprint) continue
      try {
        added.push(this.#sourceOf(name, a.info))
      } catch {
        // an unusable NAR URL: not a source
      }
    }
    if (added.length === 0) return undefined
    const updated: NarInfoRecord = { ...record, sources: [...record.sources, ...added] }
    await this.#d.store.putNarInfo(hashPart, fileName, formatNixHash(info.narHash), updated)
    this.#admitted.set(fileName, { hashPart, record: updated })
    this.#d.log.info({ path: formatStorePath(info.storePath), added: added.map((s) => s.upstream) }, 'found new sources for a NAR')
    return updated
  }

  /** The source record of an upstream's narinfo (its NAR URL resolved on that upstream). */
  #sourceOf(upstream: string, info: NarInfo): SourceRecord {
    return {
      upstream,
      url: this.#upstreams.get(upstream)!.resolveUrl(info.url),
      compression: info.compression,
      ...(info.fileHash ? { fileHash: formatNixHash(info.fileHash) } : {}),
      ...(info.fileSize !== undefined ? { fileSize: info.fileSize } : {}),
    }
  }

  #follow(download: NarDownload): NarAnswer {
    if (download.state === 'done') {
      this.#d.store.touch(download.fileName)
      return { kind: 'stored', path: download.finalPath, size: download.written }
    }
    return { kind: 'following', follower: download.follow(), size: download.expectedSize }
  }

  #start(fileName: string, info: NarInfo, source: SourceRecord, upstream: Upstream): NarDownload {
    const { metrics, log } = this.#d
    const download = new NarDownload(fileName, describedBy(info, source), source.url, upstream, this.#d.store)
    this.#downloads.set(fileName, download)
    metrics.downloadsInFlight.inc()
    const path = formatStorePath(info.storePath)
    download.done.then(
      ({ record, durationMs }) => {
        metrics.downloadsInFlight.dec()
        metrics.upstreamRequests.inc({ upstream: upstream.name, kind: 'nar', outcome: 'verified' })
        metrics.bytesFetched.inc({ upstream: upstream.name }, record.fileSize)
        log.info({ path, upstream: upstream.name, fileSize: record.fileSize, narSize: record.narSize, durationMs }, 'NAR verified and stored')
        this.#d.store.touch(fileName)
        this.collectGarbageIfNeeded()
        // The served narinfo may now carry the stored file's hash and size.
        this.#served.delete(info.storePath.hashPart)
        setTimeout(() => {
          if (this.#downloads.get(fileName) === download) this.#downloads.delete(fileName)
        }, DONE_LINGER_MS).unref()
      },
      (err: NarthexError) => {
        metrics.downloadsInFlight.dec()
        if (this.#downloads.get(fileName) === download) this.#downloads.delete(fileName)
        metrics.upstreamRequests.inc({ upstream: upstream.name, kind: 'nar', outcome: err.code })
        if (err.code === 'SHUTTING_DOWN') return
        const verification = VERIFICATION_FAILURES.has(err.code)
        // Bad bytes keep a source out for failedSourceTtlMs; a transient failure briefly.
        this.#failedSources.set(`${fileName} ${source.upstream}`, err.code, verification ? {} : { ttl: TRANSIENT_SKIP_MS })
        if (verification) {
          metrics.narFailures.inc({ upstream: upstream.name, code: err.code })
          upstream.reportFailure()
          log.error({ path, upstream: upstream.name, code: err.code, err: err.message, bytes: download.written }, 'NAR failed verification; discarded')
          void this.#d.audit
            .append({ decision: 'nar-rejected', storePath: path, narHash: formatNixHash(info.narHash), upstreams: [upstream.name], reason: err.code, message: err.message })
            .catch((e) => log.error({ err: (e as Error).message }, 'cannot write the audit log'))
        } else {
          log.warn({ path, upstream: upstream.name, code: err.code, err: err.message, bytes: download.written }, 'NAR download failed')
        }
      },
    )
    return download
  }

  /** Stops background work and aborts running downloads; waits for them to settle. */
  async close(): Promise<void> {
    this.#closed = true
    this.#prefetchQueue.length = 0
    const running = [...this.#downloads.values()].filter((d) => d.state === 'running')
    for (const d of running) d.abort(new NarthexError('SHUTTING_DOWN', 'narthex is shutting down'))
    await Promise.allSettled(running.map((d) => d.done))
    await this.#d.audit.flush()
  }
}
