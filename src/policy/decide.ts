/**
 * The admission decision: given what each upstream answered for a hash part,
 * which copy (if any) narthex admits. Pure: the cache layer gathers the answers
 * and acts on the decision.
 *
 * The rules, in order:
 * - the governing rule is chosen by the store path's name (first match wins);
 *   answers from upstreams the rule does not list are ignored;
 * - shadowing: the rule's upstreams are walked in priority order and the first
 *   one that has the path supplies it; if an earlier one could not be asked, the
 *   answer is "unavailable" (503), never the lower-priority copy;
 * - quorum: signatures by the rule's trusted keys over the same fingerprint are
 *   gathered across all of the rule's upstreams; at least `minSignatures`
 *   distinct keys must have signed;
 * - conflicts: a signed answer with another fingerprint, or a NarHash other than
 *   the one admitted before for this path, refuses the path.
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

/** Why a path was refused. Stable: the audit log and metrics use them. */
export type RefusalReason =
  | 'NO_RULE'
  | 'DENIED_BY_RULE'
  | 'NOT_ELIGIBLE'
  | 'INSUFFICIENT_SIGNATURES'
  | 'CONFLICT'
  | 'CONFLICT_WITH_ADMITTED'

/** The outcome of {@link decide}. */
export type Decision =
  | {
      readonly kind: 'admit'
      readonly rule: Rule
      /** The chosen narinfo, its signatures replaced by all verified trusted ones gathered. */
      readonly info: NarInfo
      /** Upstreams offering this fingerprint, in the rule's order; the first supplied it. */
      readonly sources: readonly Source[]
      /** Distinct key names whose signatures counted. */
      readonly signers: readonly string[]
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
      /** The answer refused, when there was one. */
      readonly info?: NarInfo
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
  const present = [...answers.values()].filter((a): a is Extract<UpstreamAnswer, { kind: 'present' }> => a.kind === 'present')
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
  if (!rule) return refuse(undefined, 'NO_RULE', `no rule matches ${names[0]}`, [], present[0]!.info)
  if (rule.upstreams.length === 0) {
    return refuse(rule, 'DENIED_BY_RULE', 'the rule allows no upstream', [], present[0]!.info)
  }
  if (eligible.length === 0) {
    const down = unavailableAmong(answers, rule.upstreams)
    if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
    const offeredBy = present.map((a) => a.upstream).join(', ')
    return refuse(rule, 'NOT_ELIGIBLE', `offered only by upstreams the rule does not allow (${offeredBy})`, [], present[0]!.info)
  }

  // Shadowing: walk in priority order; an upstream that could not be asked
  // before the first that has the path makes the answer "unavailable".
  let candidate: Extract<UpstreamAnswer, { kind: 'present' }> | undefined
  for (const u of rule.upstreams) {
    const a = answers.get(u)
    if (a === undefined || a.kind === 'unavailable') return { kind: 'unavailable', rule, upstreams: [u] }
    if (a.kind === 'present') {
      candidate = a
      break
    }
  }
  if (!candidate) return { kind: 'absent', rule }

  const fingerprint = fingerprintNarInfo(candidate.info)
  const sources: Source[] = []
  const sigs = new Set<string>()
  const conflicting: string[] = []
  for (const u of rule.upstreams) {
    const a = answers.get(u)
    if (a?.kind !== 'present') continue
    const valid = validSignatures(a.info, rule.trustedKeys)
    if (fingerprintNarInfo(a.info) === fingerprint) {
      sources.push({ upstream: u, info: a.info })
      for (const s of valid) sigs.add(s)
    } else if (valid.length > 0 || rule.minSignatures === 0) {
      // A dissenting answer counts only when it could itself have been admitted.
      conflicting.push(`${u}: ${formatNixHash(a.info.narHash)}`)
    }
  }
  const narHash = formatNixHash(candidate.info.narHash)
  if (conflicting.length > 0 && rule.minSignatures > 0 && validSignatures(candidate.info, rule.trustedKeys).length === 0) {
    // The higher-priority answer proves nothing (no valid signature: damaged or forged),
    // and shadowing forbids taking the lower-priority copy instead: answer "try later"
    // rather than a conflict that clients would remember for an hour.
    return { kind: 'unavailable', rule, upstreams: [candidate.upstream] }
  }
  if (conflicting.length > 0) {
    return refuse(rule, 'CONFLICT', `upstreams disagree: ${candidate.upstream}: ${narHash}; ${conflicting.join('; ')}`, [narHash, ...conflicting.map((c) => c.slice(c.indexOf(': ') + 2))], candidate.info)
  }
  if (remembered && !nixHashEquals(remembered, candidate.info.narHash)) {
    return refuse(rule, 'CONFLICT_WITH_ADMITTED', `offered ${narHash} but ${formatNixHash(remembered)} was admitted before`, [narHash, formatNixHash(remembered)], candidate.info)
  }
  const signers = [...new Set([...sigs].map(signatureKeyName))].sort()
  if (signers.length < rule.minSignatures) {
    const down = unavailableAmong(answers, rule.upstreams)
    if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
    return refuse(
      rule,
      'INSUFFICIENT_SIGNATURES',
      `${signers.length} of ${rule.minSignatures} required trusted signature(s)${signers.length ? ` (${signers.join(', ')})` : ''}`,
      [narHash],
      candidate.info,
    )
  }
  // The unsigned fields (URL, Compression, FileHash, FileSize) come from the first source whose
  // narinfo is consistent: a damaged `Compression` line (Nix then assumes bzip2) must not decide
  // how the NAR is stored and served when another source describes the same NAR coherently.
  const presenter = sources.find((s) => urlAgreesWithCompression(s.info.url, s.info.compression))
  if (!presenter) {
    // Only incoherent descriptions so far: an upstream that could not be asked may have a coherent one.
    const down = unavailableAmong(answers, rule.upstreams)
    if (down.length > 0) return { kind: 'unavailable', rule, upstreams: down }
  }
  const described = (presenter ?? sources[0]!).info
  const { fileHash: _h, fileSize: _s, ...signed } = candidate.info
  const info: NarInfo = {
    ...signed,
    url: described.url,
    compression: described.compression,
    ...(described.fileHash ? { fileHash: described.fileHash } : {}),
    ...(described.fileSize !== undefined ? { fileSize: described.fileSize } : {}),
    sigs: [...sigs].sort(),
  }
  return { kind: 'admit', rule, info, sources, signers }
}

function refuse(rule: Rule | undefined, reason: RefusalReason, message: string, narHashes: string[], info?: NarInfo): Decision {
  return { kind: 'refuse', rule, reason, message, narHashes, ...(info ? { info } : {}) }
}
