/**
 * Answering `GET /nar/<fileName>`: the stored file, or one verified download of
 * it shared by every client that asks meanwhile (see nar-download.ts).
 *
 * Sources are tried in the admitted record's order. One that fails is
 * remembered and skipped for a while; when every known source failed, the
 * rule's upstreams are asked again for new ones; when every source of the
 * served compression delivered bytes that failed verification, the record
 * switches to another compression a source offers. How a failed download counts
 * (audit entry, upstream health, how long its source is skipped) is decided
 * here, in {@link NarFetcher}'s failure handler.
 */
import type { LRUCache } from 'lru-cache'
import { boundedLru } from '../lru.js'
import type { Logger } from 'pino'
import { NarthexError, isNarthexError } from '../errors.js'
import { ruleFor, type Policy, type UpstreamAnswer } from '../policy/index.js'
import { fingerprintNarInfo, formatNarInfo, formatNixHash, formatStorePath, narFileNameOf, parseNarFileName, parseNarInfo, type Compression, type NarInfo } from '../protocol/index.js'
import type { AuditLog, NarInfoRecord, SourceRecord, Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'
import type { Metrics } from './metrics.js'
import { NarDownload, type NarFollower } from './nar-download.js'
import { BUCKET_SOURCE } from './bucket-narinfo.js'
import { describedBy, sourceOf } from './nar-source.js'
import type { NarInfoAnswer } from './resolve-narinfo.js'

/** The answer to a NAR request. */
export type NarAnswer =
  | { readonly kind: 'stored'; readonly path: string; readonly size: number }
  /** A download in progress, followed from its temp file; `close()` it when not sending it. */
  | { readonly kind: 'following'; readonly follower: NarFollower; readonly size: number | undefined }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** What a {@link NarFetcher} works with. */
export interface NarFetcherDeps {
  readonly store: Store
  /** Configured upstreams by name. */
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly policy: Policy
  readonly log: Logger
  readonly metrics: Metrics
  readonly audit: AuditLog
  /** Compressions this machine can decode (and so verify). */
  readonly supported: ReadonlySet<string>
  /** How long a source whose NAR failed verification is skipped. */
  readonly failedSourceTtlMs: number
  /** The bucket nodes share, read as the first source of every NAR (storage.s3). */
  readonly bucket?: Upstream | undefined
  /** Asks every upstream that may supply a hash part (to find new sources). */
  readonly ask: (hashPart: string) => Promise<Map<string, UpstreamAnswer>>
  /** Told when a NAR was verified and stored for the path `hashPart`. */
  readonly onStored: (hashPart: string) => void
  /** Told when the path's record now serves another NAR file (compression switched). */
  readonly onSwitched: (hashPart: string) => void
  /** Resolves a path's narinfo as its request would (a NAR asked for by a path this node has no record of). */
  readonly resolve: (hashPart: string) => Promise<NarInfoAnswer>
}

interface Admitted {
  readonly hashPart: string
  readonly record: NarInfoRecord
  /** The record's narinfo, parsed (when the admission had it at hand). */
  readonly info?: NarInfo | undefined
}

// A finished download stays findable this long, so a request that looked at the
// store just before the commit joins it instead of starting a second download.
const DONE_LINGER_MS = 10_000

// How long a source that failed for a transient reason (timeout, reset) is skipped.
const TRANSIENT_SKIP_MS = 5_000

// Failures that prove a source's bytes wrong (as opposed to it being unreachable).
const VERIFICATION_FAILURES = new Set(['HASH_MISMATCH', 'SIZE_MISMATCH', 'NAR_INVALID'])

/** Fetches NARs: one download per file, failover across sources, failed-source memory. */
export class NarFetcher {
  readonly #d: NarFetcherDeps
  /** NAR file name → the hash part admitted with it and its record: a NAR request after its narinfo reads no index. */
  readonly #admitted = boundedLru<string, Admitted>(10_000)
  readonly #downloads = new Map<string, NarDownload>()
  /** `<fileName> <upstream>` → the code of the failure that keeps that source skipped. */
  readonly #failedSources: LRUCache<string, string>
  /** Source refreshes running, by hash part. */
  readonly #refreshing = new Map<string, Promise<NarInfoRecord | undefined>>()
  #closed = false

  constructor(deps: NarFetcherDeps) {
    this.#d = deps
    this.#failedSources = boundedLru(10_000, { ttl: deps.failedSourceTtlMs })
  }

  /** Downloads running now. */
  get inFlight(): number {
    let n = 0
    for (const d of this.#downloads.values()) if (d.state === 'running') n++
    return n
  }

  /** Remembers what was admitted with a NAR file (and its parsed narinfo), so its request needs no index look-up or parse. */
  remember(fileName: string, hashPart: string, record: NarInfoRecord, info?: NarInfo): void {
    this.#admitted.set(fileName, { hashPart, record, info })
  }

  /** Forgets finished downloads of files just evicted, so no late joiner is sent to a file that is gone. */
  evicted(fileNames: Iterable<string>): void {
    for (const name of fileNames) if (this.#downloads.get(name)?.state === 'done') this.#downloads.delete(name)
  }

  /**
   * Answers a NAR request: the stored file, or a stream that follows the one
   * download of it. A source that fails before sending anything is skipped for
   * the next one at once; one that fails midway aborts its clients and is
   * skipped for later requests.
   * @param hint the hash part of the path the NAR was asked for by (`/nar/<hashPart>/<fileName>`):
   *   resolved first when this node has no record of it; `absent` when its narinfo has another NarHash.
   */
  async get(fileName: string, hint?: string): Promise<NarAnswer> {
    const parsed = parseNarFileName(fileName)
    if (!parsed) return { kind: 'absent' }
    let hinted: Admitted | undefined
    if (hint !== undefined) {
      const found = await this.#hinted(fileName, hint)
      if ('kind' in found) return found
      hinted = found
    }
    const running = this.#downloads.get(fileName)
    if (running && running.state !== 'failed') {
      // Joined only once it has a byte: one whose source fails before that is
      // replaced by the next source below, as for the client that started it.
      await running.whenStarted()
      if ((running.state as NarDownload['state']) !== 'failed') return this.#follow(running)
    }
    const { store } = this.#d
    const stored = await store.getNarFile(fileName)
    if (stored) {
      store.touch(fileName)
      return { kind: 'stored', path: store.narPath(fileName), size: stored.fileSize }
    }
    const known = hinted ?? this.#admitted.get(fileName) ?? (await this.#admittedFromIndex(fileName))
    if (!known) return { kind: 'absent' }
    const { hashPart } = known
    let record: NarInfoRecord = known.record
    const info = known.info ?? parseNarInfo(record.narinfo)
    let allGone = true
    const tried = new Set<string>()
    for (let round = 0; round < 2; round++) {
      if (round === 1) {
        // Every known source failed: upstreams that could not be asked when the path was
        // admitted may offer the same fingerprint now.
        const refreshed: NarInfoRecord | undefined = this.#closed ? undefined : await this.#refreshOnce(hashPart, record, fileName)
        if (!refreshed) break
        record = refreshed
      }
      for (const source of this.#withBucket(record.sources, fileName, parsed.compression)) {
        if (tried.has(source.upstream)) continue
        tried.add(source.upstream)
        if (source.compression !== parsed.compression) continue
        const failed = this.#failedSources.get(`${fileName} ${source.upstream}`)
        if (failed !== undefined) {
          // Skipped because it just failed: it could not deliver, which is not "gone".
          // The bucket lacking a NAR proves nothing: its upload may still be running elsewhere.
          if (failed !== 'NOT_FOUND' || source.upstream === BUCKET_SOURCE) allGone = false
          continue
        }
        const upstream = source.upstream === BUCKET_SOURCE ? this.#d.bucket : this.#d.upstreams.get(source.upstream)
        if (!upstream) continue
        // Re-checked with no await since the last look: joining beats a second download.
        const again = this.#downloads.get(fileName)
        // This source's download has just failed and is still cleaning up (its failure not recorded
        // yet): a client it cut off that asks again at once must not get the same bad source.
        let download: NarDownload
        if (again?.state === 'failed' && again.upstream === upstream) download = again
        else {
          download = again && again.state !== 'failed' ? again : this.#start(fileName, info, source, upstream)
          await download.whenStarted()
        }
        // Failed before this client got anything (at once, or right after its first bytes): next source.
        if (download.state === 'failed') {
          if (!isNarthexError(download.error, 'NOT_FOUND') || source.upstream === BUCKET_SOURCE) allGone = false
          continue
        }
        return this.#follow(download)
      }
    }
    if (this.#closed) return { kind: 'unavailable', retryAfterS: 5 }
    if (await this.#switchCompression(hashPart, record, fileName)) return { kind: 'unavailable', retryAfterS: 1 }
    return allGone ? { kind: 'absent' } : { kind: 'unavailable', retryAfterS: 10 }
  }

  /** Stops fetching and aborts running downloads; waits for them to settle and for verified ones to be committed. */
  async close(): Promise<void> {
    this.#closed = true
    const unsettled = [...this.#downloads.values()].filter((d) => d.state === 'running' || d.state === 'verified')
    for (const d of unsettled) if (d.state === 'running') d.abort(new NarthexError('SHUTTING_DOWN', 'narthex is shutting down'))
    await Promise.allSettled(unsettled.map((d) => d.done))
  }

  /**
   * The record of the path a NAR was asked for by: remembered, in the index, or
   * resolved now (its narinfo request would come here next). A path whose
   * narinfo has another NarHash is absent: a hint never gets another path's NAR.
   */
  async #hinted(fileName: string, hashPart: string): Promise<Admitted | Exclude<NarAnswer, { kind: 'stored' | 'following' }>> {
    const remembered = this.#admitted.get(fileName)
    if (remembered?.hashPart === hashPart) return remembered
    let record = await this.#d.store.getNarInfo(hashPart)
    if (!record) {
      const answer = await this.#d.resolve(hashPart)
      if (answer.kind !== 'found') return answer
      record = await this.#d.store.getNarInfo(hashPart)
      if (!record) return { kind: 'absent' }
    }
    const info = parseNarInfo(record.narinfo)
    // The path's NarHash in another compression is still this path's NAR (a record that switched compression).
    const compression = parseNarFileName(fileName)?.compression
    if (compression === undefined || narFileNameOf({ narHash: info.narHash, compression }) !== fileName) return { kind: 'absent' }
    if (narFileNameOf(info) === fileName) this.remember(fileName, hashPart, record, info)
    return { hashPart, record, info }
  }

  /** The bucket first (with no file fields: another node's upload may be another compression run), then the record's sources. */
  #withBucket(sources: readonly SourceRecord[], fileName: string, compression: Compression): readonly SourceRecord[] {
    const bucket = this.#d.bucket
    return bucket ? [{ upstream: BUCKET_SOURCE, url: bucket.resolveUrl(`nar/${fileName}`), compression }, ...sources] : sources
  }

  async #admittedFromIndex(fileName: string): Promise<Admitted | undefined> {
    const hashParts = await this.#d.store.narInfosForFile(fileName)
    if (hashParts.length === 0) return undefined
    const record = await this.#d.store.getNarInfo(hashParts[0])
    return record ? { hashPart: hashParts[0], record } : undefined
  }

  /** {@link NarFetcher.#refreshSources}, shared by the requests (a client's, a prefetch) that need it at once. */
  #refreshOnce(hashPart: string, record: NarInfoRecord, fileName: string): Promise<NarInfoRecord | undefined> {
    let pending = this.#refreshing.get(hashPart)
    if (!pending) {
      pending = this.#refreshSources(hashPart, record, fileName).finally(() => this.#refreshing.delete(hashPart))
      this.#refreshing.set(hashPart, pending)
    }
    return pending
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
    const answers = await this.#d.ask(hashPart)
    const added: SourceRecord[] = []
    for (const name of rule.upstreams) {
      const a = answers.get(name)
      const upstream = this.#d.upstreams.get(name)
      if (known.has(name) || !upstream || a?.kind !== 'present' || fingerprintNarInfo(a.info) !== fingerprint) continue
      try {
        added.push(sourceOf(upstream, a.info))
      } catch {
        // an unusable NAR URL: not a source
      }
    }
    if (added.length === 0) return undefined
    const updated: NarInfoRecord = { ...record, sources: [...record.sources, ...added] }
    await this.#d.store.putNarInfo(hashPart, fileName, formatNixHash(info.narHash), updated)
    this.remember(fileName, hashPart, updated)
    this.#d.log.info({ path: formatStorePath(info.storePath), added: added.map((s) => s.upstream) }, 'found new sources for a NAR')
    return updated
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
    const fileOf = (s: SourceRecord) => narFileNameOf({ narHash: info.narHash, compression: s.compression })
    const rejected = (s: SourceRecord) => VERIFICATION_FAILURES.has(this.#failedSources.get(`${fileOf(s)} ${s.upstream}`) ?? '')
    const same = record.sources.filter((s) => s.compression === info.compression)
    if (same.length === 0 || !same.every(rejected)) return false
    const other = record.sources.find(
      (s) => s.compression !== info.compression && this.#d.supported.has(s.compression) && this.#d.upstreams.has(s.upstream) && !rejected(s),
    )
    if (!other) return false
    const switched = describedBy(info, other)
    const newFile = fileOf(other)
    await this.#d.store.putNarInfo(hashPart, newFile, formatNixHash(info.narHash), { ...record, narinfo: formatNarInfo(switched) })
    this.#admitted.delete(fileName)
    this.#d.onSwitched(hashPart)
    this.#d.log.warn(
      { path: formatStorePath(info.storePath), from: fileName, to: newFile, upstream: other.upstream },
      'every source of the served compression failed verification; serving another compression from now on',
    )
    return true
  }

  #follow(download: NarDownload): NarAnswer {
    if (download.state === 'done') {
      this.#d.store.touch(download.fileName)
      return { kind: 'stored', path: download.finalPath, size: download.written }
    }
    return { kind: 'following', follower: download.follow(), size: download.expectedSize }
  }

  #start(fileName: string, info: NarInfo, source: SourceRecord, upstream: Upstream): NarDownload {
    const download = new NarDownload(fileName, describedBy(info, source), source.url, upstream, this.#d.store)
    this.#downloads.set(fileName, download)
    this.#d.metrics.downloadsInFlight.inc()
    download.done.then(
      ({ record, durationMs }) => {
        const { metrics, log, store } = this.#d
        metrics.downloadsInFlight.dec()
        metrics.upstreamRequests.inc({ upstream: upstream.name, kind: 'nar', outcome: 'verified' })
        metrics.bytesFetched.inc({ upstream: upstream.name }, record.fileSize)
        log.info(
          { path: formatStorePath(info.storePath), upstream: upstream.name, fileSize: record.fileSize, narSize: record.narSize, durationMs },
          'NAR verified and stored',
        )
        // Used from its verification on: a client may have used another NAR since, before this commit.
        store.touch(fileName, download.verifiedAt)
        this.#d.onStored(info.storePath.hashPart)
        setTimeout(() => {
          if (this.#downloads.get(fileName) === download) this.#downloads.delete(fileName)
        }, DONE_LINGER_MS).unref()
      },
      (err: NarthexError) => this.#failed(download, info, source, upstream, err),
    )
    return download
  }

  /**
   * A download failed. Bad bytes (a verification failure) count against the
   * upstream's health, are audited as a rejected NAR, and keep the source out
   * for `failedSourceTtlMs`; a transient failure (timeout, reset, 404) only
   * keeps it out briefly, and a shutdown counts for nothing.
   */
  #failed(download: NarDownload, info: NarInfo, source: SourceRecord, upstream: Upstream, err: NarthexError): void {
    const { metrics, log, audit } = this.#d
    const fileName = download.fileName
    metrics.downloadsInFlight.dec()
    if (this.#downloads.get(fileName) === download) this.#downloads.delete(fileName)
    metrics.upstreamRequests.inc({ upstream: upstream.name, kind: 'nar', outcome: err.code })
    if (err.code === 'SHUTTING_DOWN') return
    const path = formatStorePath(info.storePath)
    const verification = VERIFICATION_FAILURES.has(err.code)
    this.#failedSources.set(`${fileName} ${source.upstream}`, err.code, verification ? {} : { ttl: TRANSIENT_SKIP_MS })
    if (!verification) {
      log.warn({ path, upstream: upstream.name, code: err.code, err: err.message, bytes: download.written }, 'NAR download failed')
      return
    }
    metrics.narFailures.inc({ upstream: upstream.name, code: err.code })
    upstream.reportFailure()
    log.error({ path, upstream: upstream.name, code: err.code, err: err.message, bytes: download.written }, 'NAR failed verification; discarded')
    void audit
      .append({ decision: 'nar-rejected', storePath: path, narHash: formatNixHash(info.narHash), upstreams: [upstream.name], reason: err.code, message: err.message })
      .catch((e) => log.error({ err: (e as Error).message }, 'cannot write the audit log'))
  }
}
