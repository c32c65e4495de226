/**
 * The shared pin: a path's narinfo in the bucket (`<hashPart>.narinfo`), which
 * the first node to admit the path creates and every node then follows. Only a
 * narinfo signed by one of narthex's own signing keys is followed: the bucket
 * is written by narthex nodes sharing the key, and anything else there (an
 * object written by hand, another cache's narinfo) is not trusted.
 */
import { isDenied, ruleFor, type Decision, type Policy, type UpstreamAnswer } from '../policy/index.js'
import {
  fingerprintNarInfo,
  formatNarInfo,
  formatNixHash,
  formatStorePath,
  nixHashEquals,
  formatS3Location,
  narFileNameOf,
  narUrl,
  parseNarInfo,
  signatureKeyName,
  type S3Location,
  validSignatures,
  type NarInfo,
  type PublicKey,
} from '../protocol/index.js'
import type { AuditEvent, Bucket, NarInfoRecord, SourceRecord } from '../store/index.js'
import { Upstream, type UpstreamHooks } from '../upstream/index.js'
import { storedDenial } from './apply-deny.js'
import { sourceOf } from './nar-source.js'

/** What the bucket holds for a path. */
export type BucketNarInfo =
  | { readonly kind: 'absent' }
  /** A narinfo signed by narthex: `info` has its other signatures only (narthex's own are made again when served). */
  | { readonly kind: 'found'; readonly info: NarInfo; readonly signers: readonly string[] }
  /** Something narthex cannot follow: unparsable, another path's, or not signed by narthex's keys. */
  | { readonly kind: 'untrusted'; readonly reason: string }

/** Reads and creates the narinfos of the bucket. */
export class BucketNarInfos {
  readonly #bucket: Bucket
  readonly #keys: readonly PublicKey[]
  readonly #names: ReadonlySet<string>

  /** `keys`: the public keys of narthex's signing keys. */
  constructor(bucket: Bucket, keys: readonly PublicKey[]) {
    this.#bucket = bucket
    this.#keys = keys
    this.#names = new Set(keys.map((k) => k.name))
  }

  /**
   * The path's narinfo in the bucket.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked.
   */
  async read(hashPart: string): Promise<BucketNarInfo> {
    const text = await this.#bucket.getText(`${hashPart}.narinfo`)
    return text === undefined ? { kind: 'absent' } : this.#check(hashPart, text)
  }

  /**
   * Creates the path's narinfo (`text`, signed by narthex) unless the bucket
   * has one; then returns that one, for the caller to follow.
   * @throws NarthexError UPSTREAM_UNAVAILABLE when the bucket cannot be asked.
   */
  async pin(hashPart: string, text: string): Promise<{ readonly kind: 'created' } | BucketNarInfo> {
    // The bucket is laid out as a binary cache Nix reads itself: its NARs are at the flat `nar/<fileName>`. The URL is not signed.
    const info = parseNarInfo(text)
    const flat = formatNarInfo({ ...info, url: narUrl(narFileNameOf(info)) })
    const outcome = await this.#bucket.createIfAbsent(`${hashPart}.narinfo`, flat)
    return outcome.kind === 'created' ? outcome : this.#check(hashPart, outcome.text)
  }

  #check(hashPart: string, text: string): BucketNarInfo {
    let info: NarInfo
    try {
      info = parseNarInfo(text)
    } catch (err) {
      return { kind: 'untrusted', reason: `unparsable: ${(err as Error).message}` }
    }
    if (info.storePath.hashPart !== hashPart) return { kind: 'untrusted', reason: `it describes ${info.storePath.hashPart}` }
    if (validSignatures(info, this.#keys).length === 0) return { kind: 'untrusted', reason: "no valid signature by narthex's signing keys" }
    const sigs = info.sigs.filter((s) => !this.#names.has(signatureKeyName(s)))
    const signers = [...new Set(sigs.map(signatureKeyName))].sort()
    return { kind: 'found', info: { ...info, sigs }, signers }
  }
}

/**
 * The index record of a path followed from the bucket: its narinfo as the
 * bucket has it (URL, compression and file fields of the pinning node's file),
 * `sources` the upstreams known to offer the same fingerprint (none when the
 * path was found in the bucket before any upstream was asked).
 */
export function followedRecord(found: Extract<BucketNarInfo, { kind: 'found' }>, rule: number, sources: readonly SourceRecord[]): NarInfoRecord {
  return { narinfo: formatNarInfo(found.info), sources, rule, signers: found.signers, admittedAt: Date.now(), origin: BUCKET_ORIGIN }
}

/** The origin of records followed from the bucket. */
export const BUCKET_ORIGIN = 'bucket'

/** The bucket's name as a NAR source: no configured upstream can have it (names start with a letter or digit). */
export const BUCKET_SOURCE = '@bucket'

/**
 * The internal upstream that reads the bucket's NAR files, so NAR fetching
 * treats the bucket as one more source: verified, coalesced, failed over.
 * Settings are the upstream defaults, but a bucket that fails is skipped only
 * briefly, and its NARs fall through to the upstreams meanwhile.
 */
export function bucketNarSource(location: S3Location, hooks: UpstreamHooks = {}): Upstream {
  return new Upstream({
    name: BUCKET_SOURCE,
    url: formatS3Location(location),
    timeoutMs: 10_000,
    retries: 1,
    maxConnections: 32,
    minBytesPerSecond: 1024,
    failureThreshold: 3,
    downForMs: 10_000,
  }, hooks)
}

/** What the bucket means for a path being resolved. */
export type BucketOutcome =
  /** Nothing to follow: resolve the path from the upstreams, or keep the admission just made. */
  | { readonly kind: 'none' }
  /** Follow the bucket's narinfo (with `conflict` to audit when it overruled an upstream's answer). */
  | { readonly kind: 'follow'; readonly found: Found; readonly record: NarInfoRecord; readonly conflict?: { readonly event: AuditEvent; readonly upstream: string } }
  | { readonly kind: 'refuse'; readonly decision: Extract<Decision, { kind: 'refuse' }> }
  | { readonly kind: 'unavailable'; readonly reason: string }
  | { readonly kind: 'untrusted'; readonly reason: string }

type Found = Extract<BucketNarInfo, { kind: 'found' }>

/** After a local miss: the path's narinfo in the bucket, to follow unless the path or its signer is denied. */
export async function lookUpBucket(pins: BucketNarInfos, policy: Policy, hashPart: string): Promise<BucketOutcome> {
  if (isDenied(policy, hashPart)) return { kind: 'none' }
  let found: BucketNarInfo
  try {
    found = await pins.read(hashPart)
  } catch (err) {
    return { kind: 'unavailable', reason: (err as Error).message }
  }
  if (found.kind === 'absent') return { kind: 'none' }
  if (found.kind === 'untrusted') return found
  const record = followedRecord(found, ruleFor(policy, hashPart, found.info.storePath.name)?.index ?? -1, [])
  if (storedDenial(policy, hashPart, record) !== undefined) return { kind: 'none' }
  return { kind: 'follow', found, record }
}

/**
 * Creates the path's narinfo (`text`, as narthex serves it) in the bucket
 * before an admission is kept. When the bucket has one already with another
 * NarHash, the bucket wins under `onConflict: priority` (the upstreams
 * offering its fingerprint become the sources) and the path is refused as a
 * CONFLICT under `onConflict: refuse`.
 */
export async function pinInBucket(
  pins: BucketNarInfos,
  hashPart: string,
  text: string,
  decision: Extract<Decision, { kind: 'admit' }>,
  answers: ReadonlyMap<string, UpstreamAnswer>,
  upstreams: ReadonlyMap<string, Upstream>,
): Promise<BucketOutcome> {
  let pinned
  try {
    pinned = await pins.pin(hashPart, text)
  } catch (err) {
    return { kind: 'unavailable', reason: (err as Error).message }
  }
  if (pinned.kind === 'created') return { kind: 'none' }
  if (pinned.kind === 'absent') return { kind: 'unavailable', reason: 'the narinfo in the bucket is gone after a conflicting create' }
  if (pinned.kind === 'untrusted') return pinned
  const info = decision.info
  if (nixHashEquals(pinned.info.narHash, info.narHash)) return { kind: 'none' }
  const theirs = formatNixHash(pinned.info.narHash)
  const message = `the bucket pins ${theirs}; ${decision.upstream} offered ${decision.narHash}`
  if (decision.rule.onConflict === 'refuse') {
    return { kind: 'refuse', decision: { kind: 'refuse', rule: decision.rule, reason: 'CONFLICT', message, narHashes: [theirs, decision.narHash], info } }
  }
  const fingerprint = fingerprintNarInfo(pinned.info)
  const sources: SourceRecord[] = []
  for (const a of answers.values()) {
    const upstream = upstreams.get(a.upstream)
    if (a.kind !== 'present' || !upstream || fingerprintNarInfo(a.info) !== fingerprint) continue
    try {
      sources.push(sourceOf(upstream, a.info))
    } catch {
      // an unusable NAR URL: not a source
    }
  }
  const event: AuditEvent = {
    decision: 'conflict',
    storePath: formatStorePath(info.storePath),
    narHash: theirs,
    narHashes: [theirs, decision.narHash],
    upstreams: [BUCKET_ORIGIN, decision.upstream],
    signers: pinned.signers,
    rule: decision.rule.index,
    conflicts: [{ upstream: decision.upstream, narHash: decision.narHash, signers: decision.signers }],
    reason: 'CONFLICT',
    message,
  }
  return { kind: 'follow', found: pinned, record: followedRecord(pinned, decision.rule.index, sources), conflict: { event, upstream: decision.upstream } }
}
