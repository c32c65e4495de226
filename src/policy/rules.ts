/**
 * Policy rules, compiled from the configuration: which rule governs a store
 * path, which upstreams may supply it and in what order, which keys count, how
 * many of them must sign, and what a disagreement between upstreams does. Pure:
 * no I/O.
 */
import picomatch from 'picomatch'
import { isHashPart, parsePublicKey, parseStorePath, type PublicKey } from '../protocol/index.js'
import { compileDenyList, withoutDeniedKeys, type DenyInput, type DenyList } from './deny.js'

/**
 * What a rule does when its upstreams offer validly signed answers with different
 * fingerprints: `priority` admits the rule's choice and records the others as
 * conflicts; `refuse` refuses the path.
 */
export type OnConflict = 'priority' | 'refuse'

/** The parts of the config the policy needs (kept structural so tests can build them inline). */
export interface PolicyInput {
  readonly upstreams: ReadonlyArray<{ readonly name: string; readonly publicKeys: readonly string[] }>
  readonly rules: ReadonlyArray<{
    readonly match: readonly string[]
    readonly upstreams: readonly string[]
    /** Default: 1, or 0 for a deny rule (no upstreams), where it means nothing. */
    readonly minSignatures?: number | undefined
    readonly trustedKeys?: readonly string[] | undefined
    /** Default: `priority`. */
    readonly onConflict?: OnConflict | undefined
  }>
  readonly deny?: DenyInput | undefined
}

/** A compiled rule. */
export interface Rule {
  /** Position in `rules[]`, for messages and the audit log. */
  readonly index: number
  /** The patterns as written, for messages. */
  readonly match: readonly string[]
  /** Upstreams allowed to supply matching paths, in priority order; empty denies. */
  readonly upstreams: readonly string[]
  /** Keys whose signatures count for matching paths (never one on `deny.keys`). */
  readonly trustedKeys: readonly PublicKey[]
  /** Distinct trusted keys that must sign the same fingerprint (0 allows unsigned paths; 0 for deny rules). */
  readonly minSignatures: number
  /** What a disagreement between the rule's upstreams does (see {@link OnConflict}). */
  readonly onConflict: OnConflict
  /** True when the name part matches (globs) or the hash/full path matches (pins). */
  readonly matches: (hashPart: string, name: string | undefined) => boolean
  /** True when the rule can be chosen from the hash part alone (a pin). */
  readonly pinsHash: (hashPart: string) => boolean
}

/** A compiled policy: rules in order, first match wins. */
export interface Policy {
  readonly rules: readonly Rule[]
  /** Every upstream some rule may ask, in first-appearance order. */
  readonly upstreamsInUse: readonly string[]
  /** Keys that never count and paths refused whatever the rules say. */
  readonly deny: DenyList
}

function compileMatcher(patterns: readonly string[]): Pick<Rule, 'matches' | 'pinsHash'> {
  const hashes = new Set<string>()
  const pathNames = new Map<string, string>()
  const globs: Array<(name: string) => boolean> = []
  for (const p of patterns) {
    if (p.startsWith('/')) {
      const sp = parseStorePath(p)
      pathNames.set(sp.hashPart, sp.name)
    } else if (isHashPart(p)) hashes.add(p)
    else globs.push(picomatch(p, { dot: true }))
  }
  return {
    matches: (hashPart, name) => {
      if (hashes.has(hashPart)) return true
      const pinned = pathNames.get(hashPart)
      if (pinned !== undefined) return name === undefined || name === pinned
      return name !== undefined && globs.some((g) => g(name))
    },
    pinsHash: (hashPart) => hashes.has(hashPart) || pathNames.has(hashPart),
  }
}

/**
 * Compiles a validated configuration's rules and deny lists.
 * @throws NarthexError KEY_INVALID or STORE_PATH_INVALID for input the config validation rejects.
 */
export function compilePolicy(input: PolicyInput): Policy {
  const deny = compileDenyList(input.deny)
  const keysOf = new Map(input.upstreams.map((u) => [u.name, u.publicKeys.map(parsePublicKey)]))
  const rules = input.rules.map((r, index): Rule => {
    const trustedKeys = r.trustedKeys ? r.trustedKeys.map(parsePublicKey) : r.upstreams.flatMap((u) => keysOf.get(u) ?? [])
    return {
      index,
      match: r.match,
      upstreams: r.upstreams,
      trustedKeys: withoutDeniedKeys({ deny }, dedupeKeys(trustedKeys)),
      minSignatures: r.upstreams.length === 0 ? 0 : (r.minSignatures ?? 1),
      onConflict: r.onConflict ?? 'priority',
      ...compileMatcher(r.match),
    }
  })
  const upstreamsInUse = [...new Set(rules.flatMap((r) => r.upstreams))]
  return { rules, upstreamsInUse, deny }
}

function dedupeKeys(keys: PublicKey[]): PublicKey[] {
  const seen = new Set<string>()
  return keys.filter((k) => {
    const id = `${k.name}:${Buffer.from(k.key).toString('base64')}`
    if (seen.has(id)) return false
    seen.add(id)
    return true
  })
}

/**
 * The rule governing a store path, or undefined when none matches (the path is
 * then refused). `name` may be unknown when only the hash part was asked for:
 * then only pins can match.
 */
export function ruleFor(policy: Policy, hashPart: string, name: string | undefined): Rule | undefined {
  return policy.rules.find((r) => r.matches(hashPart, name))
}

/**
 * The upstreams worth asking for a hash part before its name is known: those of
 * a pinning rule when one pins it, else every upstream any rule may use.
 */
export function upstreamsToAsk(policy: Policy, hashPart: string): readonly string[] {
  const pin = policy.rules.find((r) => r.pinsHash(hashPart))
  return pin ? pin.upstreams : policy.upstreamsInUse
}

/** A human description of a rule, for logs and `explain`. */
export function describeRule(rule: Rule): string {
  return `rules[${rule.index}] (match ${rule.match.map((m) => JSON.stringify(m)).join(', ')})`
}
