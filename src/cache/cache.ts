/**
 * narthex's use cases behind one facade: answer a narinfo (resolve-narinfo.ts),
 * a NAR (fetch-nar.ts), a build log (build-log.ts), a realisation
 * (realisations.ts) and a NAR listing (listing.ts), with prefetch
 * (prefetch.ts) and the store's size limit (gc-trigger.ts) running alongside.
 * {@link Cache} builds the pieces and wires each one's events to the others;
 * it holds no state of its own.
 */
import type { Logger } from 'pino'
import { upstreamsToAsk, type Policy, type UpstreamAnswer } from '../policy/index.js'
import { NarthexError } from '../errors.js'
import { formatNixHash, parseNarInfo, type SecretKey } from '../protocol/index.js'
import { supportedCompressions, type AuditLog, type NarInfoRecord, type Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'
import type { Metrics } from './metrics.js'
import { askUpstreams } from './ask.js'
import type { BucketNarInfos } from './bucket-narinfo.js'
import { findBuildLog, storedBuildLog, type LogAnswer } from './build-log.js'
import { ListingWriter, type ListingAnswer } from './listing.js'
import { RealisationResolver, type RealisationAnswer } from './realisations.js'
import { NarFetcher, type NarAnswer } from './fetch-nar.js'
import { GcTrigger } from './gc-trigger.js'
import { Prefetcher } from './prefetch.js'
import { NarInfoResolver, type NarInfoAnswer } from './resolve-narinfo.js'

export type { LogAnswer } from './build-log.js'
export type { ListingAnswer } from './listing.js'
export type { RealisationAnswer } from './realisations.js'
export type { NarAnswer } from './fetch-nar.js'
export type { NarInfoAnswer } from './resolve-narinfo.js'

/** Settings of the cache use cases (the config's `cache` and `prefetch` sections). */
export interface CacheSettings {
  readonly negativeTtlMs: number
  readonly unavailableTtlMs: number
  readonly narinfoLruEntries: number
  readonly prefetchReferences: boolean
  readonly prefetchNars: boolean
  readonly prefetchMaxInFlight: number
  readonly prefetchMaxNarsInFlight?: number | undefined
  readonly prefetchMaxBytesAhead?: number | undefined
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
  /** narthex's signing keys, each signing every narinfo served. */
  readonly signingKeys: readonly SecretKey[]
  readonly log: Logger
  readonly metrics: Metrics
  readonly audit: AuditLog
  readonly settings: CacheSettings
  /** The bucket nodes share (storage.s3): its narinfos, and its NAR files as the first source of every NAR (docs/STORAGE-S3.md). */
  readonly bucket?: CacheBucket | undefined
}

/** The bucket as the cache uses it. */
export interface CacheBucket {
  readonly narinfos: BucketNarInfos
  /** An internal upstream reading the bucket's `nar/` files; undefined: NARs come from the upstreams only. */
  readonly nars?: Upstream | undefined
}

/** The narthex cache: store, upstreams and policy behind the questions clients ask. */
export class Cache {
  readonly #upstreams: readonly Upstream[]
  readonly #audit: AuditLog
  readonly #ask: (hashPart: string) => Promise<Map<string, UpstreamAnswer>>
  readonly #narinfos: NarInfoResolver
  readonly #nars: NarFetcher
  readonly #prefetch: Prefetcher
  readonly #gc: GcTrigger
  readonly #store: Store
  readonly #realisations: RealisationResolver
  readonly #listings: ListingWriter
  readonly #bucket: CacheBucket | undefined

  constructor(deps: CacheDeps) {
    const { store, policy, signingKeys, log, metrics, audit, settings } = deps
    const upstreams = new Map(deps.upstreams.map((u) => [u.name, u]))
    const supported = new Set(supportedCompressions())
    this.#upstreams = deps.upstreams
    this.#audit = audit
    this.#store = store
    this.#bucket = deps.bucket
    this.#realisations = new RealisationResolver({ store, upstreams, policy, signingKeys, log, audit, negativeTtlMs: settings.negativeTtlMs })
    this.#listings = new ListingWriter(store)
    this.#ask = (hashPart) => askUpstreams(upstreams, upstreamsToAsk(policy, hashPart), hashPart, supported, log, metrics)
    // The callbacks below run only once requests come in, after every piece exists.
    this.#gc = new GcTrigger({ store, log, maxStoreBytes: settings.maxStoreBytes, onEvicted: (names) => this.#nars.evicted(names) })
    this.#nars = new NarFetcher({
      store,
      upstreams,
      policy,
      log,
      metrics,
      audit,
      supported,
      failedSourceTtlMs: settings.failedSourceTtlMs ?? 600_000,
      bucket: deps.bucket?.nars,
      ask: this.#ask,
      onStored: (hashPart) => {
        this.#gc.collectIfNeeded()
        // The served narinfo may now carry the stored file's hash and size.
        this.#narinfos.forgetServed(hashPart)
      },
      onSwitched: (hashPart) => this.#narinfos.forgetServed(hashPart),
      resolve: (hashPart) => this.#narinfos.get(hashPart),
    })
    this.#narinfos = new NarInfoResolver({
      store,
      upstreams,
      policy,
      signingKeys,
      log,
      metrics,
      audit,
      settings,
      ask: this.#ask,
      bucket: deps.bucket?.narinfos,
      onAdmitted: ({ hashPart, fileName, record, info }) => {
        this.#nars.remember(fileName, hashPart, record, info)
        this.#prefetch.admitted(info, fileName)
      },
    })
    // Prefetch asks the resolver and the fetcher directly: only clients' requests count as asked.
    this.#prefetch = new Prefetcher({
      settings,
      log,
      metrics,
      getNarInfo: (hashPart) => this.#narinfos.get(hashPart),
      getNar: (fileName) => this.#nars.get(fileName),
      isKnown: (hashPart) => this.#narinfos.isKnown(hashPart),
      storedBytes: () => store.totalBytes,
    })
  }

  /** The upstreams, for health reporting. */
  get upstreams(): readonly Upstream[] {
    return this.#upstreams
  }

  /** Downloads running now. */
  get downloadsInFlight(): number {
    return this.#nars.inFlight
  }

  /** NAR prefetch now: bytes of prefetched NARs no client asked for yet, and prefetch downloads running. */
  get prefetchFigures(): { bytesAhead: number; narsInFlight: number } {
    return { bytesAhead: this.#prefetch.bytesAhead, narsInFlight: this.#prefetch.narsInFlight }
  }

  /** The narinfo for `hashPart` when it was served lately (a hit), without waiting; undefined: ask {@link getNarInfo}. */
  hotNarInfo(hashPart: string): string | undefined {
    const text = this.#narinfos.hot(hashPart)
    if (text !== undefined) this.#prefetch.served(hashPart)
    return text
  }

  /**
   * Answers `GET /<hashPart>.narinfo`. Concurrent requests for one hash part
   * share one resolution.
   */
  async getNarInfo(hashPart: string): Promise<NarInfoAnswer> {
    const answer = await this.#narinfos.get(hashPart)
    // The client lacks this path, so it will ask for its NAR: a cold one starts downloading now.
    if (answer.kind === 'found') this.#prefetch.served(hashPart)
    return answer
  }

  /**
   * Answers `GET /nar/[<hashPart>/]<fileName>`: the stored file, or a stream that
   * follows the one download of it (see {@link NarFetcher.get}). With `hashPart`,
   * a path this node has no record of is resolved first.
   */
  getNar(fileName: string, hashPart?: string): Promise<NarAnswer> {
    this.#prefetch.asked(fileName)
    return this.#nars.get(fileName, hashPart)
  }

  /** Answers `GET /log/<drv>` (`nix log`): a pushed log, else the upstreams' (see {@link findBuildLog}). */
  async getLog(drvName: string): Promise<LogAnswer> {
    return (await storedBuildLog(this.#store, drvName)) ?? findBuildLog(this.#upstreams, drvName)
  }

  /** Answers `GET /realisations/<id>.doi` (see {@link RealisationResolver}). */
  getRealisation(id: string): Promise<RealisationAnswer> {
    return this.#realisations.get(id)
  }

  /** Answers `GET /<hashPart>.ls`: the listing narthex writes from the stored NAR (see {@link ListingWriter}). */
  getListing(hashPart: string): Promise<ListingAnswer> {
    return this.#listings.get(hashPart)
  }

  /** Asks every upstream that may supply `hashPart` at once (see {@link askUpstreams}). */
  askUpstreams(hashPart: string): Promise<Map<string, UpstreamAnswer>> {
    return this.#ask(hashPart)
  }

  /** Compiles the cold path's code and touches the index ahead of the first request (see {@link NarInfoResolver.warmUp}). */
  warmUp(): Promise<void> {
    return this.#narinfos.warmUp()
  }

  /** Drops remembered answers for a hash part (after a push admitted it). */
  forget(hashPart: string): void {
    this.#narinfos.forget(hashPart)
  }

  /**
   * The narinfo as narthex serves it: URL pointing at narthex's content-addressed
   * NAR name, file hash and size of the stored file when there is one, the
   * verified upstream signatures, and narthex's own.
   */
  formatServed(record: NarInfoRecord): Promise<string> {
    return this.#narinfos.formatServed(record)
  }

  /**
   * Creates a pushed path's narinfo in the bucket, as narthex serves it,
   * unless the bucket has one (the shared pin).
   * @returns the NarHash the bucket pins now (the record's own when created or
   *   equal), or undefined without a bucket.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked
   *   or holds a narinfo narthex does not follow.
   */
  async pinInBucket(hashPart: string, record: NarInfoRecord): Promise<string | undefined> {
    if (!this.#bucket) return undefined
    const pinned = await this.#bucket.narinfos.pin(hashPart, await this.#narinfos.formatServed(record))
    if (pinned.kind === 'created') return formatNixHash(parseNarInfo(record.narinfo).narHash)
    if (pinned.kind === 'found') return formatNixHash(pinned.info.narHash)
    throw new NarthexError('UPSTREAM_UNAVAILABLE', `the bucket holds a narinfo for ${hashPart} narthex does not follow${pinned.kind === 'untrusted' ? `: ${pinned.reason}` : ''}`)
  }

  /**
   * Evicts least-recently-used NARs down to 90% of `maxStoreBytes` when the
   * store is larger; one collection at a time.
   */
  collectGarbageIfNeeded(): void {
    this.#gc.collectIfNeeded()
  }

  /** Stops background work and aborts running downloads; waits for them to settle. */
  async close(): Promise<void> {
    this.#narinfos.close()
    this.#prefetch.close()
    await this.#nars.close()
    await this.#audit.flush()
  }
}
