/**
 * Answering `GET /realisations/<id>.doi` (ca-derivations: which store path a
 * content-addressed derivation's output is): from the index, or by asking the
 * upstreams and admitting the first answer the policy accepts. The rule is the
 * one of the realisation's output path (its name is known only from the
 * answer); the realisation's own signatures must reach the rule's quorum of
 * trusted keys, as a narinfo's must, and only an upstream of that rule may
 * supply it. Admitted realisations are indexed with their verified signatures
 * and served re-signed by narthex. Concurrent requests for one id share one
 * resolution.
 */
import { boundedLru } from '../lru.js'
import type { Logger } from 'pino'
import { denyReason, describeRule, ruleFor, type Policy, type RefusalReason, type Rule } from '../policy/index.js'
import {
  formatRealisation,
  formatStorePath,
  MAX_REALISATION_BYTES,
  parseRealisation,
  signatureKeyName,
  signRealisation,
  validRealisationSignatures,
  type Realisation,
  type SecretKey,
} from '../protocol/index.js'
import type { AuditLog, RealisationRecord, Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'

/** The answer to a realisation request. */
export type RealisationAnswer =
  | { readonly kind: 'found'; readonly text: string }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/** What a {@link RealisationResolver} works with. */
export interface RealisationDeps {
  readonly store: Store
  /** Configured upstreams, in config order. */
  readonly upstreams: ReadonlyMap<string, Upstream>
  readonly policy: Policy
  /** narthex's signing keys: each signs every realisation served (key rotation). */
  readonly signingKeys: readonly SecretKey[]
  readonly log: Logger
  readonly audit: AuditLog
  /** How long "absent" is remembered; 0 does not remember it. */
  readonly negativeTtlMs: number
}

/** One upstream's acceptable answer. */
interface Candidate {
  readonly upstream: string
  readonly realisation: Realisation
  readonly rule: Rule
  readonly sigs: string[]
  readonly signers: string[]
}

/** Why one upstream's answer was not admitted. */
interface Refusal {
  readonly storePath: string
  readonly reason: RefusalReason
  readonly message: string
  readonly rule?: Rule
}

/** The distinct key names of `sigs`, sorted. */
function signersOf(sigs: readonly string[]): string[] {
  return [...new Set(sigs.map(signatureKeyName))].sort()
}

/** Resolves realisation requests; owns their negative cache. */
export class RealisationResolver {
  readonly #d: RealisationDeps
  readonly #absent = boundedLru<string, true>(10_000, { ttlAutopurge: false })
  readonly #resolving = new Map<string, Promise<RealisationAnswer>>()

  constructor(deps: RealisationDeps) {
    this.#d = deps
  }

  /**
   * Answers a request for the realisation `id` (`sha256:<hex>!<output>`,
   * already validated). The index is read before the remembered "absent", so a
   * push is served at once.
   */
  get(id: string): Promise<RealisationAnswer> {
    let pending = this.#resolving.get(id)
    if (!pending) {
      pending = this.#resolve(id).finally(() => this.#resolving.delete(id))
      this.#resolving.set(id, pending)
    }
    return pending
  }

  /** The served text of an indexed realisation: its verified signatures and narthex's. */
  serve(record: RealisationRecord): string {
    return formatRealisation(this.#d.signingKeys.reduce((r, key) => signRealisation(r, key), parseRealisation(record.realisation)))
  }

  async #resolve(id: string): Promise<RealisationAnswer> {
    const { store, policy, log } = this.#d
    const record = await store.getRealisation(id)
    if (record) return { kind: 'found', text: this.serve(record) }
    if (this.#absent.get(id)) return { kind: 'absent' }
    const names = policy.upstreamsInUse.filter((n) => this.#d.upstreams.has(n))
    let unavailable = false
    const answers = await Promise.all(
      names.map(async (name) => {
        try {
          return { name, text: await this.#d.upstreams.get(name)!.fetchRealisation(id, MAX_REALISATION_BYTES) }
        } catch (err) {
          unavailable = true
          log.warn({ upstream: name, id, err: (err as Error).message }, 'could not ask an upstream for a realisation')
          return { name, text: undefined }
        }
      }),
    )
    const candidates: Candidate[] = []
    const refusals: Array<Refusal & { upstream: string }> = []
    for (const { name, text } of answers) {
      if (text === undefined) continue
      const verdict = this.#judge(id, name, text)
      if (verdict && 'reason' in verdict) refusals.push({ ...verdict, upstream: name })
      else if (verdict) candidates.push(verdict)
    }
    const denied = refusals.find((r) => r.reason === 'DENIED')
    if (denied) {
      await this.#refuse(id, denied)
      return this.#absentFor(id)
    }
    // The rule's upstream order decides between candidates, as it does for narinfos.
    const chosen = candidates.sort((a, b) => a.rule.upstreams.indexOf(a.upstream) - b.rule.upstreams.indexOf(b.upstream))[0]
    if (!chosen) {
      if (refusals[0]) await this.#refuse(id, refusals[0])
      return unavailable ? { kind: 'unavailable', retryAfterS: 10 } : this.#absentFor(id)
    }
    const outPath = chosen.realisation.outPath
    const disagreeing = candidates.filter((c) => c.realisation.outPath.hashPart !== outPath.hashPart)
    if (disagreeing.length > 0 && chosen.rule.onConflict === 'refuse') {
      const message = `upstreams disagree on the output of ${id}`
      await this.#refuse(id, { storePath: formatStorePath(outPath), reason: 'CONFLICT', message, rule: chosen.rule, upstream: chosen.upstream })
      return this.#absentFor(id)
    }
    const admitted: RealisationRecord = {
      realisation: formatRealisation({ ...chosen.realisation, signatures: chosen.sigs }),
      origin: chosen.upstream,
      rule: chosen.rule.index,
      signers: chosen.signers,
      admittedAt: Date.now(),
    }
    await store.putRealisation(id, admitted)
    await this.#d.audit.append({
      decision: 'realisation',
      storePath: formatStorePath(outPath),
      upstreams: [chosen.upstream],
      signers: chosen.signers,
      rule: chosen.rule.index,
      message: id,
    })
    log.info({ id, path: formatStorePath(outPath), upstream: chosen.upstream, rule: describeRule(chosen.rule) }, 'realisation admitted')
    return { kind: 'found', text: this.serve(admitted) }
  }

  /** Whether one upstream's answer may be admitted: well-formed, for `id`, from the rule's upstream, signed enough, not denied. */
  #judge(id: string, upstream: string, text: string): Candidate | Refusal | undefined {
    const { policy, log } = this.#d
    let realisation: Realisation
    try {
      realisation = parseRealisation(text)
      if (realisation.id !== id) throw new Error(`it is the realisation of ${realisation.id}`)
    } catch (err) {
      log.warn({ upstream, id, err: (err as Error).message }, 'ignoring an invalid realisation')
      return undefined
    }
    const { hashPart, name } = realisation.outPath
    const storePath = formatStorePath(realisation.outPath)
    const denied = denyReason(policy, hashPart, name)
    if (denied) return { storePath, reason: 'DENIED', message: denied }
    const rule = ruleFor(policy, hashPart, name)
    if (!rule) return { storePath, reason: 'NO_RULE', message: `no rule matches ${storePath}` }
    if (!rule.upstreams.includes(upstream)) return { storePath, reason: 'NOT_ELIGIBLE', message: `${describeRule(rule)} does not allow upstream ${upstream}`, rule }
    const sigs = validRealisationSignatures(realisation, rule.trustedKeys)
    const signers = signersOf(sigs)
    if (signers.length < rule.minSignatures) {
      return { storePath, reason: 'INSUFFICIENT_SIGNATURES', message: `${signers.length} of ${rule.minSignatures} required signature(s) on the realisation`, rule }
    }
    return { upstream, realisation, rule, sigs, signers }
  }

  async #refuse(id: string, refusal: Refusal & { upstream: string }): Promise<void> {
    const { storePath, reason, message, rule, upstream } = refusal
    this.#d.log.warn({ id, path: storePath, upstream, reason }, `realisation refused: ${message}`)
    await this.#d.audit.append({ decision: 'refuse', storePath, upstreams: [upstream], reason, message: `${id}: ${message}`, ...(rule ? { rule: rule.index } : {}) })
  }

  #absentFor(id: string): RealisationAnswer {
    if (this.#d.negativeTtlMs > 0) this.#absent.set(id, true, { ttl: this.#d.negativeTtlMs })
    return { kind: 'absent' }
  }
}
