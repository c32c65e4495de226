/**
 * What a narinfo decision leaves behind besides the answer: the audit entry,
 * the counters and the log line of a refusal, and of an admission whose
 * upstreams disagreed (onConflict: priority).
 */
import type { Logger } from 'pino'
import { describeRule, type Decision } from '../policy/index.js'
import { formatStorePath } from '../protocol/index.js'
import type { AuditLog } from '../store/index.js'
import type { Metrics } from './metrics.js'

/** Where a decision is recorded. */
export interface DecisionRecords {
  readonly audit: AuditLog
  readonly metrics: Metrics
  readonly log: Logger
}

/** Audits, counts and logs the signed answers that disagreed with an admission. */
export async function recordConflicts({ audit, metrics, log }: DecisionRecords, decision: Extract<Decision, { kind: 'admit' }>): Promise<void> {
  const storePath = formatStorePath(decision.info.storePath)
  const rule = decision.rule.index
  for (const c of decision.conflicts) metrics.conflicts.inc({ rule: String(rule), upstream: c.upstream })
  await audit.append({
    decision: 'conflict',
    storePath,
    narHash: decision.narHash,
    narHashes: [decision.narHash, ...decision.conflicts.map((c) => c.narHash)],
    upstreams: [decision.upstream, ...decision.conflicts.map((c) => c.upstream)],
    signers: decision.signers,
    rule,
    conflicts: decision.conflicts,
    reason: 'CONFLICT',
    message: `admitted ${decision.narHash} from ${decision.upstream}; ${decision.conflicts.map((c) => `${c.upstream} offered ${c.narHash}`).join('; ')}`,
  })
  log.warn(
    { path: storePath, upstream: decision.upstream, narHash: decision.narHash, conflicts: decision.conflicts, rule: describeRule(decision.rule) },
    'upstreams disagree: admitted the higher-priority answer',
  )
}

/** Counts, logs and audits a refusal of `hashPart`. */
export async function recordRefusal({ audit, metrics, log }: DecisionRecords, hashPart: string, decision: Extract<Decision, { kind: 'refuse' }>): Promise<void> {
  metrics.narinfoLookups.inc({ outcome: 'refused' })
  metrics.refusals.inc({ reason: decision.reason })
  const storePath = decision.info ? formatStorePath(decision.info.storePath) : hashPart
  log.warn({ path: storePath, reason: decision.reason, rule: decision.rule?.index }, `refused: ${decision.message}`)
  await audit.append({
    decision: 'refuse',
    storePath,
    ...(decision.narHashes[0] ? { narHash: decision.narHashes[0] } : {}),
    ...(decision.narHashes.length > 1 ? { narHashes: decision.narHashes } : {}),
    ...(decision.conflicts ? { upstreams: decision.conflicts.map((c) => c.upstream), conflicts: decision.conflicts } : {}),
    ...(decision.rule ? { rule: decision.rule.index } : {}),
    reason: decision.reason,
    message: decision.message,
  })
}
