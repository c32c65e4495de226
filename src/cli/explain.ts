/**
 * `narthex explain STOREPATH`: which rule governs a path, which upstreams in
 * which order, which keys count and how many, and whether the deny lists deny
 * it; with `--fetch`, what each upstream answers (signatures by denied keys
 * named), the decision narthex would take, and the answers that disagree with
 * it. Stores nothing.
 */
import { askUpstreams, deniedSigners } from '../cache/index.js'
import type { Config } from '../config/index.js'
import { compilePolicy, decide, denyReason, describeRule, ruleFor, upstreamsToAsk, type Conflict } from '../policy/index.js'
import { formatNixHash, formatPublicKey, parseStorePathLoose, signatureKeyName, validSigners } from '../protocol/index.js'
import { supportedCompressions } from '../store/index.js'
import { Upstream, upstreamLocation } from '../upstream/index.js'

/** Runs `narthex explain`; returns the exit code. */
export async function runExplain(
  config: Config,
  text: string,
  options: { fetch: boolean; json: boolean },
  out: (line: string) => void,
): Promise<number> {
  const path = parseStorePathLoose(text)
  const policy = compilePolicy(config)
  const rule = ruleFor(policy, path.hashPart, path.name || undefined)
  const report: Record<string, unknown> = { storePath: text }
  const denied = denyReason(policy, path.hashPart, path.name || undefined)
  if (denied) report.denied = denied
  if (!rule) {
    report.rule = null
    report.summary = path.name ? 'no rule matches: the path would be refused' : 'give a full store path or basename: rules match on the name'
  } else {
    report.rule = { index: rule.index, match: rule.match }
    report.upstreams = rule.upstreams.map((name) => {
      const url = config.upstreams.find((u) => u.name === name)?.url
      return { name, url: url === undefined ? undefined : upstreamLocation(url) }
    })
    report.trustedKeys = rule.trustedKeys.map(formatPublicKey)
    report.minSignatures = rule.minSignatures
    report.onConflict = rule.onConflict
  }
  if (options.fetch) {
    const upstreams = new Map(config.upstreams.map((u) => [u.name, new Upstream({ ...u, retries: 0 })]))
    try {
      const answers = await askUpstreams(upstreams, upstreamsToAsk(policy, path.hashPart), path.hashPart, new Set(supportedCompressions()))
      report.answers = [...answers.values()].map((a) => {
        if (a.kind !== 'present') return { upstream: a.upstream, answer: a.kind, ...(a.kind === 'unavailable' ? { reason: a.reason } : {}) }
        const r = ruleFor(policy, path.hashPart, a.info.storePath.name)
        return {
          upstream: a.upstream,
          answer: 'present',
          storePath: `/nix/store/${a.info.storePath.hashPart}-${a.info.storePath.name}`,
          narHash: formatNixHash(a.info.narHash),
          narSize: a.info.narSize,
          signatures: a.info.sigs.map(signatureKeyName),
          validTrustedSigners: r ? validSigners(a.info, r.trustedKeys) : [],
          deniedSigners: deniedSigners(policy, a.info),
        }
      })
      const decision = decide(policy, path.hashPart, answers)
      report.decision =
        decision.kind === 'admit'
          ? {
              decision: 'admit',
              from: decision.upstream,
              signers: decision.signers,
              narHash: decision.narHash,
              ...(decision.conflicts.length ? { conflicts: decision.conflicts } : {}),
            }
          : decision.kind === 'refuse'
            ? { decision: 'refuse', reason: decision.reason, message: decision.message, ...(decision.conflicts ? { conflicts: decision.conflicts } : {}) }
            : decision.kind === 'unavailable'
              ? { decision: 'unavailable (503)', upstreams: decision.upstreams }
              : { decision: 'absent (404)' }
    } finally {
      await Promise.all([...upstreams.values()].map((u) => u.close()))
    }
  }
  if (options.json) {
    out(JSON.stringify(report, null, 2))
    return 0
  }
  out(`store path:     ${text}`)
  if (denied) out(`denied:         ${denied}`)
  if (!rule) {
    out(`rule:           none (${report.summary as string})`)
  } else {
    out(`rule:           ${describeRule(rule)}`)
    out(`upstreams:      ${rule.upstreams.length ? rule.upstreams.map((u, i) => `${i + 1}. ${u}`).join('  ') : 'none: the rule denies the path'}`)
    out(`trusted keys:   ${rule.trustedKeys.map((k) => k.name).join(', ') || '(none)'}`)
    const { keyNames, keyBytes } = policy.deny
    if (keyNames.size + keyBytes.size > 0) {
      out(`never counted:  deny.keys: ${[...[...keyNames].map((n) => `every key named ${n}`), ...(keyBytes.size ? [`${keyBytes.size} key(s) by their bytes, under any name`] : [])].join(', ')}`)
    }
    if (rule.upstreams.length) {
      out(`signatures:     at least ${rule.minSignatures} distinct trusted key(s) over the same fingerprint`)
      out(`on conflict:    ${rule.onConflict === 'refuse' ? 'refuse the path' : 'the first upstream in order with a valid answer supplies it; the others are recorded'}`)
    }
  }
  if (options.fetch) {
    for (const a of report.answers as Array<Record<string, unknown>>) {
      const detail =
        a.answer === 'present'
          ? `${a.narHash as string}, ${a.narSize as number} bytes, signed by ${(a.signatures as string[]).join(', ') || 'nobody'}; valid trusted: ${(a.validTrustedSigners as string[]).join(', ') || 'none'}${(a.deniedSigners as string[]).length ? `; on deny.keys: ${(a.deniedSigners as string[]).join(', ')}` : ''}`
          : a.answer === 'unavailable'
            ? `could not be asked: ${a.reason as string}`
            : 'absent'
      out(`  ${String(a.upstream).padEnd(14)}${detail}`)
    }
    const d = report.decision as Record<string, unknown>
    out(`decision:       ${JSON.stringify(d)}`)
    if (d.decision === 'admit' && d.conflicts) out(`admitted:       ${d.narHash as string} from ${d.from as string} (signed by ${(d.signers as string[]).join(', ')})`)
    for (const c of (d.conflicts as Conflict[] | undefined) ?? []) {
      out(`${d.decision === 'admit' ? 'conflict:' : 'disagreeing:'}      ${c.upstream} offers ${c.narHash} (signed by ${c.signers.join(', ') || 'nobody trusted'})${d.decision === 'admit' ? ', not used: recorded as a conflict' : ''}`)
    }
  }
  return 0
}
