/**
 * `narthex explain STOREPATH --closure`: the decision narthex would take for
 * every path of a closure, so an operator sees before a rollout which part of it
 * the policy would refuse. Walks the References of each answer (the admitted
 * one, or the refused one when there is one), asking the upstreams a few paths
 * at a time; stores nothing and reads no store (narthex may be serving from
 * it), so the first-seen NarHash pin is not taken into account.
 */
import { askUpstreams, walkClosure } from '../cache/index.js'
import type { Config } from '../config/index.js'
import { compilePolicy, decide, describeRule, upstreamsToAsk, type Decision, type UpstreamAnswer } from '../policy/index.js'
import { formatNixHash, formatStorePath, parseStorePathBase, parseStorePathLoose, type NarInfo } from '../protocol/index.js'
import { supportedCompressions } from '../store/index.js'
import { Upstream } from '../upstream/index.js'

/** Paths asked about at once. */
const CONCURRENCY = 8

/** One path of the closure and what narthex would do with it. */
interface ClosureRow {
  readonly storePath: string
  readonly rule: string | null
  /** What each asked upstream answered: `NarHash`, `absent` or `unavailable`. */
  readonly answers: Record<string, string>
  readonly decision: 'admit' | 'refuse' | 'unavailable' | 'absent'
  /** The upstream supplying it, the refusal reason and message, or the upstreams that could not be asked. */
  readonly detail: string
}

/** The narinfo a decision is about: the admitted one, or the one refused. */
function infoOf(decision: Decision): NarInfo | undefined {
  return decision.kind === 'admit' || decision.kind === 'refuse' ? decision.info : undefined
}

function rowOf(hashPart: string, answers: ReadonlyMap<string, UpstreamAnswer>, decision: Decision): ClosureRow {
  const present = [...answers.values()].find((a) => a.kind === 'present')
  const named = infoOf(decision) ?? (present?.kind === 'present' ? present.info : undefined)
  const shown: Record<string, string> = {}
  for (const [upstream, a] of answers) shown[upstream] = a.kind === 'present' ? formatNixHash(a.info.narHash) : a.kind
  const detail =
    decision.kind === 'admit'
      ? `from ${decision.upstream}, signed by ${decision.signers.join(', ') || 'nobody (unsigned allowed)'}${decision.conflicts.length ? `; ${decision.conflicts.length} conflicting answer(s) recorded` : ''}`
      : decision.kind === 'refuse'
        ? `${decision.reason}: ${decision.message}`
        : decision.kind === 'unavailable'
          ? `could not ask ${decision.upstreams.join(', ')}`
          : 'no eligible upstream has it'
  return {
    storePath: named ? formatStorePath(named.storePath) : hashPart,
    rule: decision.rule ? describeRule(decision.rule) : null,
    answers: shown,
    decision: decision.kind,
    detail,
  }
}

/** Runs `narthex explain --closure`; returns 0 when every path would be admitted, else 1. */
export async function runExplainClosure(config: Config, text: string, options: { json: boolean }, out: (line: string) => void): Promise<number> {
  const root = parseStorePathLoose(text).hashPart
  const policy = compilePolicy(config)
  const supported = new Set(supportedCompressions())
  const upstreams = new Map(config.upstreams.map((u) => [u.name, new Upstream({ ...u, retries: 0 })]))
  const rows = new Map<string, ClosureRow>()
  try {
    await walkClosure([root], CONCURRENCY, async (hashPart) => {
      const answers = await askUpstreams(upstreams, upstreamsToAsk(policy, hashPart), hashPart, supported)
      const decision = decide(policy, hashPart, answers)
      rows.set(hashPart, rowOf(hashPart, answers, decision))
      const info = infoOf(decision)
      return info ? info.references.map((r) => parseStorePathBase(r).hashPart).filter((h) => h !== hashPart) : []
    })
  } finally {
    await Promise.all([...upstreams.values()].map((u) => u.close()))
  }
  const ordered = [rows.get(root)!, ...[...rows].filter(([h]) => h !== root).map(([, r]) => r).sort((a, b) => a.storePath.localeCompare(b.storePath))]
  const count = (d: ClosureRow['decision']) => ordered.filter((r) => r.decision === d).length
  const summary = { paths: ordered.length, admitted: count('admit'), refused: count('refuse'), unavailable: count('unavailable'), absent: count('absent') }
  if (options.json) {
    out(JSON.stringify({ storePath: text, paths: ordered, summary }, null, 2))
  } else {
    for (const r of ordered) {
      out(`${r.decision.padEnd(12)}${r.storePath}`)
      out(`            rule: ${r.rule ?? 'none'}; ${r.detail}`)
      out(`            answers: ${Object.entries(r.answers).map(([u, a]) => `${u} ${a}`).join(', ') || 'none asked'}`)
    }
    out(`${summary.paths} path(s): ${summary.admitted} admitted, ${summary.refused} refused, ${summary.unavailable} unavailable, ${summary.absent} absent`)
  }
  return summary.admitted === summary.paths ? 0 : 1
}
