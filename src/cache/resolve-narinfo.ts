/**
 * Answering `GET /<hashPart>.narinfo`: from the narinfos served lately (an LRU of
 * their signed text), from remembered negative answers, from the store's index,
 * or by asking the upstreams and acting on the policy's decision (admit and
 * record it, or refuse and audit it). Concurrent requests for one hash part
 * share one resolution.
 */
import type { LRUCache } from 'lru-cache'
import { boundedLru } from '../lru.js'
import type { Logger } from 'pino'
import { decide, describeRule, isDenied, type Decision, type Policy, type UpstreamAnswer } from '../policy/index.js'
import {
  formatNarInfo,
  formatNixHash,
  formatStorePath,
  narFileNameOf,
  parseNarInfo,
  parseNixHash,
  parseStorePath,
  narUrl,
  sha256Of,
  signNarInfo,
  STORE_DIR,
  toPublicKey,
  validSignatures,
  type NarInfo,
  type SecretKey,
} from '../protocol/index.js'
import type { AuditLog, NarInfoRecord, SourceRecord, Store } from '../store/index.js'
import { appendFromOutbox, withAuditId } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'
import { dropIfDenied } from './apply-deny.js'
import { recordConflicts, recordRefusal } from './record-decision.js'
import { BUCKET_ORIGIN, lookUpBucket, pinInBucket, type BucketNarInfo, type BucketNarInfos, type BucketOutcome } from './bucket-narinfo.js'
import type { Metrics } from './metrics.js'
import { sourceOf } from './nar-source.js'

/** The answer to a narinfo request. */
export type NarInfoAnswer =
  | { readonly kind: 'found'; readonly text: string; /** From what narthex holds, or admitted from an upstream just now. */ readonly outcome?: 'hit' | 'admitted' }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** A path just admitted and indexed. */
export interface Admission {
  readonly hashPart: string
  /** The NAR file name the admitted narinfo is served with. */
  readonly fileName: string
  readonly record: NarInfoRecord
  readonly info: NarInfo
}

/** Settings of narinfo resolution (the config's `cache` section). */
export interface ResolverSettings {
  /** How long "absent" (and refusals) are remembered; 0 does not remember them. */
  readonly negativeTtlMs: number
  /** How long "unavailable" is remembered; 0 does not remember it. */
  readonly unavailableTtlMs: number
  readonly narinfoLruEntries: number
}

/** What a {@link NarInfoResolver} works with. */
export interface ResolverDeps {
  readonly store: Store
  /** Configured upstreams by name, to resolve the NAR URLs of admitted sources. */
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly policy: Policy
  /** narthex's signing keys: each signs every narinfo served (key rotation). */
  readonly signingKeys: readonly SecretKey[]
  readonly log: Logger
  readonly metrics: Metrics
  readonly audit: AuditLog
  readonly settings: ResolverSettings
  /** Asks every upstream that may supply a hash part. */
  readonly ask: (hashPart: string) => Promise<Map<string, UpstreamAnswer>>
  /** Told of every admission once it is indexed and its narinfo is ready to serve. */
  readonly onAdmitted: (admission: Admission) => void
  /**
   * The bucket's narinfos, when nodes share one (storage.s3): looked up after
   * a local miss, and created before an admission is kept (the shared pin).
   */
  readonly bucket?: BucketNarInfos | undefined
}

type Negative = Exclude<NarInfoAnswer, { kind: 'found' }>

/** Resolves narinfo requests; owns the served-text LRU and the negative cache. */
export class NarInfoResolver {
  readonly #d: ResolverDeps
  readonly #served: LRUCache<string, string>
  /** narthex's signatures by fingerprint: a path is signed once, not again when its stored file changes the served text. */
  /** One memo per signing key: fingerprint → that key's signature. */
  readonly #signatures: Array<LRUCache<string, string>>
  readonly #negative = boundedLru<string, Negative>(100_000, { ttlAutopurge: false })
  readonly #hits: { inc(): void }
  readonly #resolving = new Map<string, Promise<NarInfoAnswer>>()
  #closed = false

  constructor(deps: ResolverDeps) {
    this.#d = deps
    this.#hits = deps.metrics.narinfoLookups.labels({ outcome: 'hit' })
    this.#served = boundedLru(deps.settings.narinfoLruEntries)
    this.#signatures = deps.signingKeys.map(() => boundedLru<string, string>(deps.settings.narinfoLruEntries))
  }

  /**
   * The narinfo served lately for `hashPart`, counted as a hit, or undefined
   * when it must be resolved ({@link get}). Synchronous: the hot path of a
   * warm cache answers without a promise.
   */
  hot(hashPart: string): string | undefined {
    const text = this.#served.get(hashPart)
    // deny.paths is fixed while narthex runs, but the check is cheap and keeps a denied path from ever being served.
    if (text === undefined || isDenied(this.#d.policy, hashPart)) return undefined
    this.#hits.inc()
    return text
  }

  /** Answers a narinfo request for `hashPart`. */
  async get(hashPart: string): Promise<NarInfoAnswer> {
    const hot = this.hot(hashPart)
    if (hot !== undefined) return { kind: 'found', text: hot, outcome: 'hit' }
    const negative = this.#negative.get(hashPart)
    // With a shared bucket a remembered "absent" covers the upstreams only: another node may have admitted the path, or taken its push, since.
    if (negative?.kind === 'absent' && this.#d.bucket) return this.#once(hashPart, () => this.#recheckBucket(hashPart, negative))
    if (negative) {
      this.#d.metrics.narinfoLookups.inc({ outcome: negative.kind })
      return negative
    }
    return this.#once(hashPart, () => this.#resolve(hashPart))
  }

  /** One look-up per hash part at a time: later requests wait for the one under way. */
  #once(hashPart: string, run: () => Promise<NarInfoAnswer>): Promise<NarInfoAnswer> {
    let pending = this.#resolving.get(hashPart)
    if (!pending) {
      pending = run().finally(() => this.#resolving.delete(hashPart))
      this.#resolving.set(hashPart, pending)
    }
    return pending
  }

  /** A remembered "absent" with a bucket: the bucket's narinfo when one appeared meanwhile, else the remembered answer. */
  async #recheckBucket(hashPart: string, negative: Extract<NarInfoAnswer, { kind: 'absent' }>): Promise<NarInfoAnswer> {
    const outcome = await lookUpBucket(this.#d.bucket!, this.#d.policy, hashPart)
    if (outcome.kind === 'follow') return this.#keepFollowed(hashPart, outcome.found, outcome.record)
    this.#d.metrics.narinfoLookups.inc({ outcome: negative.kind })
    return negative
  }

  /** True when `hashPart` was served lately or is being resolved now (no need to look it up ahead). */
  isKnown(hashPart: string): boolean {
    return this.#served.has(hashPart) || this.#resolving.has(hashPart)
  }

  /** Drops every remembered answer for a hash part (after a push admitted it). */
  forget(hashPart: string): void {
    this.#served.delete(hashPart)
    this.#negative.delete(hashPart)
  }

  /** Drops the served text of a hash part, whose record or stored file changed: it is formatted anew next time. */
  forgetServed(hashPart: string): void {
    this.#served.delete(hashPart)
  }

  /**
   * The narinfo as narthex serves it: URL pointing at narthex's content-addressed
   * NAR name under the path's hash part (see {@link narUrl}), file hash and size
   * of the stored file when there is one, the verified upstream signatures, and
   * narthex's own. `parsed` is the record's narinfo when the caller has it parsed
   * already.
   */
  async formatServed(record: NarInfoRecord, parsed?: NarInfo): Promise<string> {
    const info = parsed ?? parseNarInfo(record.narinfo)
    const fileName = narFileNameOf(info)
    const stored = await this.#d.store.getNarFile(fileName)
    const served: NarInfo = {
      ...info,
      url: narUrl(fileName, info.storePath.hashPart),
      ...(stored ? { fileHash: parseNixHash(stored.fileHash), fileSize: stored.fileSize } : {}),
    }
    let signed = served
    this.#d.signingKeys.forEach((key, i) => (signed = signNarInfo(signed, key, this.#signatures[i])))
    return formatNarInfo(signed)
  }

  /**
   * Runs the cold path's pure work once (format, sign, parse, fingerprint,
   * check a signature) on a made-up narinfo, and reads the index once, so the
   * first client's request does not pay for compiling them.
   */
  async warmUp(): Promise<void> {
    const narHash = sha256Of(Buffer.from('narthex warm-up'))
    const record: NarInfoRecord = {
      narinfo: formatNarInfo({
        storePath: parseStorePath(`${STORE_DIR}/${'0'.repeat(32)}-narthex-warm-up`),
        url: 'nar/warm-up.nar',
        compression: 'none',
        narHash,
        narSize: 1,
        // Two of each, so the sorting and the signature parsing run too.
        references: [`${'1'.repeat(32)}-b`, `${'0'.repeat(32)}-narthex-warm-up`],
        sigs: ['warm-up-2:AAAA', 'warm-up-1:AAAA'],
      }),
      sources: [],
      rule: 0,
      signers: [],
      admittedAt: 0,
      origin: 'warm-up',
    }
    // Not kept: the signature memo would only hold a path no client asks for.
    const text = formatNarInfo(signNarInfo(parseNarInfo(record.narinfo), this.#d.signingKeys[0]))
    validSignatures(parseNarInfo(text), [toPublicKey(this.#d.signingKeys[0])])
    await this.#d.store.getNarInfo('0'.repeat(32))
    await this.#d.store.getNarFile(narFileNameOf({ narHash, compression: 'none' }))
    // A stored record, formatted as a client would get it (and not kept): the index's first table is opened too.
    for await (const [, stored] of this.#d.store.narInfos()) {
      await this.formatServed(stored)
      break
    }
  }

  /** Stops asking upstreams: narinfos not in the store are unavailable from now on. */
  close(): void {
    this.#closed = true
  }

  async #resolve(hashPart: string): Promise<NarInfoAnswer> {
    const { store, policy, metrics } = this.#d
    const stored = await store.getNarInfo(hashPart)
    // A record admitted before its key or path was denied is dropped here and resolved afresh.
    const record = stored && !(await dropIfDenied(this.#d, hashPart, stored)) ? stored : undefined
    if (record) {
      metrics.narinfoLookups.inc({ outcome: 'hit' })
      return { kind: 'found', text: await this.#remember(hashPart, record), outcome: 'hit' }
    }
    if (this.#closed) return { kind: 'unavailable', retryAfterS: 5 }
    const followed = this.#d.bucket && (await this.#followBucket(hashPart))
    if (followed) return followed
    const answers = await this.#d.ask(hashPart)
    const firstHash = await store.getFirstNarHash(hashPart)
    const decision = decide(policy, hashPart, answers, firstHash ? parseNixHash(firstHash) : undefined)
    switch (decision.kind) {
      case 'admit':
        return this.#admit(hashPart, decision, answers)
      case 'absent':
        metrics.narinfoLookups.inc({ outcome: 'absent' })
        this.#rememberAbsent(hashPart)
        return { kind: 'absent' }
      case 'unavailable':
        return this.#unavailable(hashPart)
      case 'refuse':
        return this.#refuse(hashPart, decision)
    }
  }

  async #admit(hashPart: string, decision: Extract<Decision, { kind: 'admit' }>, answers: ReadonlyMap<string, UpstreamAnswer>): Promise<NarInfoAnswer> {
    const { store, audit, metrics, log } = this.#d
    const info = decision.info
    const narHash = formatNixHash(info.narHash)
    const fileName = narFileNameOf(info)
    const sources: SourceRecord[] = []
    for (const s of decision.sources) {
      try {
        const upstream = this.#d.upstreams.get(s.upstream)
        if (upstream) sources.push(sourceOf(upstream, s.info))
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
      origin: decision.sources[0].upstream,
    }
    // Pinned in the bucket before it is kept or served: no two nodes ever admit two NarHashes for a path.
    const overruled = this.#d.bucket && (await this.#pin(hashPart, record, decision, answers))
    if (overruled) return overruled
    const event = withAuditId({
      decision: 'admit',
      storePath: formatStorePath(info.storePath),
      narHash,
      upstreams: decision.sources.map((s) => s.upstream),
      signers: decision.signers,
      rule: decision.rule.index,
    })
    // The event is written with the admission, so a crash before the append is replayed at start.
    await store.putNarInfo(hashPart, fileName, narHash, record, event)
    await appendFromOutbox(store, audit, event)
    if (decision.conflicts.length > 0) await recordConflicts(this.#d, decision)
    metrics.narinfoLookups.inc({ outcome: 'admitted' })
    log.info({ path: formatStorePath(info.storePath), upstream: record.origin, signers: decision.signers, rule: describeRule(decision.rule) }, 'admitted')
    this.#negative.delete(hashPart)
    const text = await this.#remember(hashPart, record, info)
    this.#d.onAdmitted({ hashPart, fileName, record, info })
    return { kind: 'found', text, outcome: 'admitted' }
  }

  /**
   * After a local miss: follows the path's narinfo in the bucket, when there
   * is one signed by narthex (another node admitted or pushed it). Undefined
   * when the bucket has none (or the path is denied): the upstreams are asked.
   */
  async #followBucket(hashPart: string): Promise<NarInfoAnswer | undefined> {
    const outcome = await lookUpBucket(this.#d.bucket!, this.#d.policy, hashPart)
    return this.#act(hashPart, outcome)
  }

  /**
   * Creates the path's narinfo in the bucket (the shared pin). Undefined when
   * this admission stands; otherwise the answer to give (see {@link pinInBucket}).
   */
  async #pin(hashPart: string, record: NarInfoRecord, decision: Extract<Decision, { kind: 'admit' }>, answers: ReadonlyMap<string, UpstreamAnswer>): Promise<NarInfoAnswer | undefined> {
    const outcome = await pinInBucket(this.#d.bucket!, hashPart, await this.formatServed(record, decision.info), decision, answers, this.#d.upstreams)
    if (outcome.kind === 'follow' && outcome.conflict) {
      const { event, upstream } = outcome.conflict
      this.#d.metrics.conflicts.inc({ rule: String(decision.rule.index), upstream })
      await this.#d.audit.append(event)
      this.#d.log.warn({ path: event.storePath, narHash: event.narHash, upstream, offered: decision.narHash }, 'the bucket pins another NarHash: following the bucket')
    }
    return this.#act(hashPart, outcome)
  }

  async #act(hashPart: string, outcome: BucketOutcome): Promise<NarInfoAnswer | undefined> {
    switch (outcome.kind) {
      case 'none':
        return undefined
      case 'follow':
        return this.#keepFollowed(hashPart, outcome.found, outcome.record)
      case 'refuse':
        return this.#refuse(hashPart, outcome.decision)
      case 'unavailable':
        this.#d.log.warn({ hashPart, err: outcome.reason }, 'cannot ask the bucket; not admitting the path now')
        return this.#unavailable(hashPart)
      case 'untrusted':
        this.#d.log.error({ hashPart, reason: outcome.reason }, 'the bucket holds a narinfo narthex does not follow; leaving it alone')
        return this.#unavailable(hashPart)
    }
  }

  /** Indexes a record followed from the bucket (with its audit entry) and serves it. */
  async #keepFollowed(hashPart: string, found: Extract<BucketNarInfo, { kind: 'found' }>, record: NarInfoRecord): Promise<NarInfoAnswer> {
    const { store, audit, metrics, log } = this.#d
    const info = found.info
    const narHash = formatNixHash(info.narHash)
    const fileName = narFileNameOf(info)
    const event = withAuditId({
      decision: 'admit',
      storePath: formatStorePath(info.storePath),
      narHash,
      upstreams: [BUCKET_ORIGIN, ...record.sources.map((s) => s.upstream)],
      signers: found.signers,
      rule: record.rule,
      message: 'followed the narinfo in the bucket',
    })
    await store.putNarInfo(hashPart, fileName, narHash, record, event)
    await appendFromOutbox(store, audit, event)
    metrics.narinfoLookups.inc({ outcome: 'bucket' })
    log.info({ path: formatStorePath(info.storePath), narHash }, 'followed the bucket')
    this.#negative.delete(hashPart)
    const text = await this.#remember(hashPart, record, info)
    this.#d.onAdmitted({ hashPart, fileName, record, info })
    return { kind: 'found', text, outcome: 'admitted' }
  }

  #unavailable(hashPart: string): NarInfoAnswer {
    const { settings, metrics } = this.#d
    metrics.narinfoLookups.inc({ outcome: 'unavailable' })
    const retryAfterS = Math.max(1, Math.ceil(settings.unavailableTtlMs / 1000))
    const answer = { kind: 'unavailable', retryAfterS } as const
    if (settings.unavailableTtlMs > 0) this.#negative.set(hashPart, answer, { ttl: settings.unavailableTtlMs })
    return answer
  }

  async #refuse(hashPart: string, decision: Extract<Decision, { kind: 'refuse' }>): Promise<NarInfoAnswer> {
    await recordRefusal(this.#d, hashPart, decision)
    this.#rememberAbsent(hashPart)
    return { kind: 'absent' }
  }

  // A ttl of 0 means "no expiry" to the LRU; negativeTtlMs 0 means "do not remember".
  #rememberAbsent(hashPart: string): void {
    const ttl = this.#d.settings.negativeTtlMs
    if (ttl > 0) this.#negative.set(hashPart, { kind: 'absent' }, { ttl })
  }

  /** Formats the narinfo clients get for a record, signs it, and keeps it in the LRU. */
  async #remember(hashPart: string, record: NarInfoRecord, info?: NarInfo): Promise<string> {
    const text = await this.formatServed(record, info)
    this.#served.set(hashPart, text)
    return text
  }
}
