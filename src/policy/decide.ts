/**
 * The admission decision: given what each upstream answered for a hash part,
 * which copy (if any) narthex admits. Pure: the cache layer gathers the answers
 * and acts on the decision.
 *
 * The rules, in order:
 * - deny list: a hash part on `deny.paths` is refused (DENIED) whatever the
 *   rules and the answers say; keys on `deny.keys` are not among any rule's
 *   trusted keys, so their signatures never count;
 * - the governing rule is chosen by the store path's name (first match wins);
 *   answers from upstreams the rule does not list are ignored;
 * - signatures: the valid signatures by the rule's trusted keys over one
 *   fingerprint are gathered across all of the rule's upstreams offering it; a
 *   fingerprint "reaches k" when at least `minSignatures` distinct keys signed it;
 * - priority and shadowing: the rule's upstreams are walked in order and the
 *   first whose fingerprint reaches k supplies the path. If an upstream ahead of
 *   it could not be asked, the answer is "unavailable" (503), never the
 *   lower-priority copy;
 * - an answer ahead that reaches nothing proves nothing and is passed over:
 *   unsigned, or signed only by keys the rule does not trust, it weighs no more
 *   than "absent" (which that upstream could have answered to the same effect).
 *   One exception keeps the protection against damage in transit: an answer
 *   carrying a signature under a trusted key's name that does not verify (its
 *   signed fields were changed) is a damaged or forged copy of a narinfo the
 *   upstream did sign, so when another fingerprint would win the answer is
 *   "unavailable": a retry may bring the intact answer, while admitting the
 *   lower-priority copy would pin it for good;
 * - conflicts: an answer from another upstream of the rule with another
 *   fingerprint that carries at least one valid trusted signature (any answer
 *   when `minSignatures` is 0) is a conflict. Under `onConflict: priority`
 *   (the default) the path is admitted and the conflicts are listed in the
 *   decision, for the cache to audit; under `onConflict: refuse` the path is
 *   refused (CONFLICT). Many builds are not bit-reproducible, so disagreement
 *   between honest caches is normal, and a lower-priority cache must not be able
 *   to deny a path by signing another build of it;
 * - quorum (`minSignatures` k ≥ 2): answers that disagree only count against
 *   reaching k. When several fingerprints reach k, the highest-priority one wins
 *   (the one offered by the earliest upstream). When none does: an upstream that
 *   could not be asked makes it "unavailable"; two or more signed fingerprints
 *   make it a CONFLICT (whatever `onConflict` says: the disagreement is what
 *   kept the quorum from being met); otherwise INSUFFICIENT_SIGNATURES;
 * - first-seen pin: a NarHash other than the one admitted before for this path
 *   is refused (CONFLICT_WITH_ADMITTED). Under `priority`, when some upstream of
 *   the rule validly offers the remembered NarHash (reaching k), that copy is
 *   admitted instead of the rule's first choice, whose answer is recorded as a
 *   conflict: the pin decides what the path is, priority only picks among
 *   admissible answers. Under `refuse`, any conflict refuses the path first.
 */
import {
  fingerprintNarInfo,
  formatNixHash,
  nixHashEquals,
  signatureKeyName,
  urlAgreesWithCompression,
  validSignatures,
  type NarInfo,
  type NixHash,
} from '../protocol/index.js'
import { denyReason } from './deny.js'
import { ruleFor, upstreamsToAsk, type Policy, type Rule } from './rules.js'

/** What one upstream answered for a narinfo. */
export type UpstreamAnswer =
  | { readonly upstream: string; readonly kind: 'present'; readonly info: NarInfo }
  | { readonly upstream: string; readonly kind: 'absent' }
  | { readonly upstream: string; readonly kind: 'unavailable'; readonly reason: string }

/** An upstream offering the admitted fingerprint, with its own narinfo (URL, compression, …). */
export interface Source {
  readonly upstream: string
  readonly info: NarInfo
}

/** An upstream's answer that disagrees with the admitted one (or, in a refusal, with the others). */
export interface Conflict {
  readonly upstream: string
  /** Its NarHash, as Nix writes it (`sha256:<nix32>`). */
  readonly narHash: string
  /** Distinct trusted key names whose signatures over its fingerprint verify, sorted. */
  readonly signers: readonly string[]
}

/** Why a path was refused. Stable strings: the audit log and metrics use them. */
export type RefusalReason =
  /** No rule matches the store path. */
  | 'NO_RULE'
  /** The governing rule has no upstreams. */
  | 'DENIED_BY_RULE'
  /** The hash part is on `deny.paths`. */
  | 'DENIED'
  /** Offered only by upstreams the governing rule does not allow. */
  | 'NOT_ELIGIBLE'
  /** No fingerprint carries `minSignatures` distinct trusted signatures. */
  | 'INSUFFICIENT_SIGNATURES'
  /** Upstreams disagree (names, or signed fingerprints under `onConflict: refuse` or an unmet quorum). */
  | 'CONFLICT'
  /** The NarHash offered is not the one admitted before for this path. */
  | 'CONFLICT_WITH_ADMITTED'

/** The outcome of {@link decide}. */
export type Decision =
  | {
      readonly kind: 'admit'
      readonly rule: Rule
      /** The chosen narinfo, its signatures replaced by all verified trusted ones gathered. */
      readonly info: NarInfo
      /** The upstream that supplies the path (the first of `sources`). */
      readonly upstream: string
      /** The admitted NarHash, as Nix writes it. */
      readonly narHash: string
      /** Upstreams offering this fingerprint, in the rule's order; the first supplied it. */
      readonly sources: readonly Source[]
      /** Distinct key names whose signatures counted. */
      readonly signers: readonly string[]
      /** Signed answers of the rule's other upstreams with another fingerprint, in the rule's order; usually empty. */
      readonly conflicts: readonly Conflict[]
    }
  | { readonly kind: 'absent'; readonly rule: Rule | undefined }
  | { readonly kind: 'unavailable'; readonly rule: Rule | undefined; readonly upstreams: readonly string[] }
  | {
      readonly kind: 'refuse'
      readonly rule: Rule | undefined
      readonly reason: RefusalReason
      readonly message: string
      /** The NarHashes involved in a conflict, or the one refused. */
      readonly narHashes: readonly string[]
      /** For CONFLICT between signed answers: every signed answer involved, in the rule's order. */
      readonly conflicts?: readonly Conflict[]
      /** The answer refused, when there was one. */
      readonly info?: NarInfo
    }

type Present = Extract<UpstreamAnswer, { kind: 'present' }>

/** One present answer of a rule's upstream. */
interface Offer {
  readonly upstream: string
  /** Position of the upstream in the rule's order. */
  readonly position: number
  readonly info: NarInfo
  readonly fingerprint: string
  /** Its `Sig:` values that verify under the rule's trusted keys. */
  readonly valid: readonly string[]
  /** Carries a signature under a trusted key's name that does not verify: damaged in transit or forged. */
  readonly damaged: boolean
}

/** The offers of one fingerprint, with the signatures gathered over all of them. */
interface Group {
  readonly fingerprint: string
  /** In the rule's order; never empty. */
  readonly offers: Offer[]
  readonly sigs: Set<string>
  readonly signers: Set<string>
}

function unavailableAmong(answers: ReadonlyMap<string, UpstreamAnswer>, upstreams: readonly string[]): string[] {
  return upstreams.filter((u) => {
    const a = answers.get(u)
    return a === undefined || a.kind === 'unavailable'
  })
}

/**
 * Decides whether to admit a path.
 * @param answers what each asked upstream said, keyed by upstream name.
 * @param remembered the NarHash admitted before for this hash part, if any.
 */
export function decide(
  policy: Policy,
  hashPart: string,
  answers: ReadonlyMap<string, UpstreamAnswer>,
  remembered?: NixHash,
): Decision {
  const present = [...answers.values()].filter((a): a is Present => a.kind === 'present')
  const denied = denyReason(policy, hashPart, present[0]?.info.storePath.name)
  if (denied) return refuse(ruleFor(policy, hashPart, present[0]?.info.storePath.name), 'DENIED', denied, [], present[0]?.info)
  if (present.length === 0) {
    const rule = ruleFor(policy, hashPart, undefined)
    const down = unavailableAmong(answers, upstreamsToAsk(policy, hashPart))
    return down.length > 0 ? { kind: 'unavailable', rule, upstreams: down } : { kind: 'absent', rule }
  }

  // The rule is chosen by the name each answer claims; only answers from
  // upstreams that rule allows count.
  const eligible = present.filter((a) => ruleFor(policy, hashPart, a.info.storePath.name)?.upstreams.includes(a.upstream))
  const names = [...new Set((eligible.length > 0 ? eligible : present).map((a) => a.info.storePath.name))]
  const rule = names.length === 1 ? ruleFor(policy, hashPart, names[0]) : undefined
  if (names.length > 1) {
    return refuse(rule, 'CONFLICT', `upstreams name this hash part differently: ${names.join(', ')}`, present.map((a) => formatNixHash(a.info.narHash)))
  }
  if (!rule) return refuse(undefined, 'NO_RULE', `no rule matches ${names[0]}`, [], present[0].info)
  if (rule.upstreams.length === 0) {
    return refuse(rule, 'DENIED_BY_RULE', 'the rule allows no upstream', [], present[0].info)
  }
  if (eligible.length === 0) {
    const down = unavailableAmong(answers, rule.upstreams)
    if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
    const offeredBy = present.map((a) => a.upstream).join(', ')
    return refuse(rule, 'NOT_ELIGIBLE', `offered only by upstreams the rule does not allow (${offeredBy})`, [], present[0].info)
  }
  return choose(rule, answers, remembered)
}

/** The rule's present answers in its order, grouped by fingerprint, and the upstreams that could not be asked. */
function gather(rule: Rule, answers: ReadonlyMap<string, UpstreamAnswer>) {
  const trustedNames = new Set(rule.trustedKeys.map((k) => k.name))
  const offers: Offer[] = []
  const down: Array<{ upstream: string; position: number }> = []
  const groups = new Map<string, Group>()
  rule.upstreams.forEach((upstream, position) => {
    const a = answers.get(upstream)
    if (a === undefined || a.kind === 'unavailable') down.push({ upstream, position })
    if (a?.kind !== 'present') return
    const valid = validSignatures(a.info, rule.trustedKeys)
    const damaged = a.info.sigs.some((s) => trustedNames.has(signatureKeyName(s)) && !valid.includes(s))
    const offer: Offer = { upstream, position, info: a.info, fingerprint: fingerprintNarInfo(a.info), valid, damaged }
    offers.push(offer)
    let group = groups.get(offer.fingerprint)
    if (!group) groups.set(offer.fingerprint, (group = { fingerprint: offer.fingerprint, offers: [], sigs: new Set(), signers: new Set() }))
    group.offers.push(offer)
    for (const s of valid) {
      group.sigs.add(s)
      group.signers.add(signatureKeyName(s))
    }
  })
  return { offers, down, groups }
}

function conflictOf(o: Offer): Conflict {
  return { upstream: o.upstream, narHash: formatNixHash(o.info.narHash), signers: [...new Set(o.valid.map(signatureKeyName))].sort() }
}

function describeConflicts(conflicts: readonly Conflict[]): string {
  return conflicts.map((c) => `${c.upstream}: ${c.narHash}${c.signers.length ? ` (${c.signers.join(', ')})` : ''}`).join('; ')
}

/** The decision among the eligible answers of `rule` (see the module comment). */
function choose(rule: Rule, answers: ReadonlyMap<string, UpstreamAnswer>, remembered: NixHash | undefined): Decision {
  const k = rule.minSignatures
  const { offers, down, groups } = gather(rule, answers)
  const groupOf = (o: Offer): Group => groups.get(o.fingerprint)!
  const reaches = (g: Group): boolean => g.signers.size >= k
  const signed = (o: Offer): boolean => k === 0 || o.valid.length > 0
  const hasPinnedHash = (g: Group): boolean => remembered !== undefined && nixHashEquals(remembered, g.offers[0].info.narHash)

  const first = offers.find((o) => reaches(groupOf(o)))
  if (!first) return short(rule, offers, groups, down.map((d) => d.upstream))
  const ahead = down.filter((d) => d.position < first.position).map((d) => d.upstream)
  if (ahead.length > 0) return { kind: 'unavailable', rule, upstreams: ahead }

  let chosen = groupOf(first)
  if (remembered && !hasPinnedHash(chosen) && rule.onConflict === 'priority') {
    const pinned = offers.find((o) => hasPinnedHash(groupOf(o)) && reaches(groupOf(o)))
    if (pinned) chosen = groupOf(pinned)
  }
  const lead = chosen.offers[0]
  const narHash = formatNixHash(lead.info.narHash)
  const pinHolds = hasPinnedHash(chosen)
  // When the pin decides, a damaged answer ahead could change nothing.
  const damaged = pinHolds ? undefined : offers.find((o) => o.position < lead.position && o.damaged && o.fingerprint !== chosen.fingerprint)
  if (damaged) return { kind: 'unavailable', rule, upstreams: [damaged.upstream] }

  const conflicts = offers.filter((o) => o.fingerprint !== chosen.fingerprint && signed(o)).map(conflictOf)
  if (conflicts.length > 0 && rule.onConflict === 'refuse') {
    const involved = offers.filter((o) => signed(o)).map(conflictOf)
    return refuse(rule, 'CONFLICT', `upstreams disagree: ${describeConflicts(involved)}`, [narHash, ...conflicts.map((c) => c.narHash)], lead.info, involved)
  }
  if (remembered && !pinHolds) {
    return refuse(rule, 'CONFLICT_WITH_ADMITTED', `offered ${narHash} but ${formatNixHash(remembered)} was admitted before`, [narHash, formatNixHash(remembered)], lead.info)
  }
  return admit(rule, answers, chosen, conflicts)
}

/** No fingerprint reaches `minSignatures`. */
function short(rule: Rule, offers: readonly Offer[], groups: ReadonlyMap<string, Group>, down: readonly string[]): Decision {
  if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
  if (offers.length === 0) return { kind: 'absent', rule }
  const signedGroups = [...groups.values()].filter((g) => g.signers.size > 0)
  if (signedGroups.length > 1) {
    const involved = offers.filter((o) => o.valid.length > 0).map(conflictOf)
    return refuse(
      rule,
      'CONFLICT',
      `upstreams disagree, so no NarHash has ${rule.minSignatures} trusted signatures: ${describeConflicts(involved)}`,
      signedGroups.map((g) => formatNixHash(g.offers[0].info.narHash)),
      signedGroups[0].offers[0].info,
      involved,
    )
  }
  const best = signedGroups[0] ?? groups.get(offers[0].fingerprint)!
  const signers = [...best.signers].sort()
  return refuse(
    rule,
    'INSUFFICIENT_SIGNATURES',
    `${signers.length} of ${rule.minSignatures} required trusted signature(s)${signers.length ? ` (${signers.join(', ')})` : ''}`,
    [formatNixHash(best.offers[0].info.narHash)],
    best.offers[0].info,
  )
}

function admit(rule: Rule, answers: ReadonlyMap<string, UpstreamAnswer>, chosen: Group, conflicts: Conflict[]): Decision {
  const sources: Source[] = chosen.offers.map((o) => ({ upstream: o.upstream, info: o.info }))
  // The unsigned fields (URL, Compression, FileHash, FileSize) come from the first source whose
  // narinfo is consistent: a damaged `Compression` line (Nix then assumes bzip2) must not decide
  // how the NAR is stored and served when another source describes the same NAR coherently.
  const presenter = sources.find((s) => urlAgreesWithCompression(s.info.url, s.info.compression))
  if (!presenter) {
    // Only incoherent descriptions so far: an upstream that could not be asked may have a coherent one.
    const down = unavailableAmong(answers, rule.upstreams)
    if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
  }
  const described = (presenter ?? sources[0]).info
  const { fileHash: _h, fileSize: _s, ...signed } = sources[0].info
  const info: NarInfo = {
    ...signed,
    url: described.url,
    compression: described.compression,
    ...(described.fileHash ? { fileHash: described.fileHash } : {}),
    ...(described.fileSize !== undefined ? { fileSize: described.fileSize } : {}),
    sigs: [...chosen.sigs].sort(),
  }
  return {
    kind: 'admit',
    rule,
    info,
    upstream: sources[0].upstream,
    narHash: formatNixHash(info.narHash),
    sources,
    signers: [...chosen.signers].sort(),
    conflicts,
  }
}

function refuse(
  rule: Rule | undefined,
  reason: RefusalReason,
  message: string,
  narHashes: string[],
  info?: NarInfo,
  conflicts?: Conflict[],
): Decision {
  return { kind: 'refuse', rule, reason, message, narHashes, ...(conflicts ? { conflicts } : {}), ...(info ? { info } : {}) }
}
