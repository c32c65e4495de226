/**
 * `narthex audit`: print or verify the audit log.
 */
import { auditLogPath, readAuditLog, verifyAuditLog, type AuditEntry } from '../store/index.js'

/** Filters of `narthex audit`. */
export interface AuditOptions {
  readonly verify?: boolean | undefined
  readonly path?: string | undefined
  readonly since?: string | undefined
  readonly until?: string | undefined
  readonly json?: boolean | undefined
}

function formatEntry(e: AuditEntry): string {
  const parts = [e.time, e.decision.padEnd(12), e.storePath]
  if (e.narHash) parts.push(e.narHash)
  if (e.upstreams?.length) parts.push(`from ${e.upstreams.join(',')}`)
  if (e.signers?.length) parts.push(`signed by ${e.signers.join(',')}`)
  if (e.rule !== undefined) parts.push(`rule ${e.rule}`)
  if (e.reason) parts.push(`${e.reason}${e.message ? `: ${e.message}` : ''}`)
  return parts.join('  ')
}

function parseTime(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined
  const t = Date.parse(text)
  if (Number.isNaN(t)) throw new Error(`--${flag}: not a time: ${text}`)
  return t
}

/** Runs `narthex audit`; returns the exit code. */
export async function runAudit(dataDir: string, options: AuditOptions, out: (line: string) => void): Promise<number> {
  const path = auditLogPath(dataDir)
  if (options.verify) {
    const result = await verifyAuditLog(path)
    if (result.ok) {
      out(`audit log ${path}: ${result.entries} entries, chain intact`)
      return 0
    }
    out(`audit log ${path}: BROKEN at line ${result.line}${result.seq !== undefined ? ` (entry ${result.seq})` : ''}: ${result.problem}`)
    return 1
  }
  let since: number | undefined
  let until: number | undefined
  try {
    since = parseTime(options.since, 'since')
    until = parseTime(options.until, 'until')
  } catch (err) {
    process.stderr.write(`narthex: ${(err as Error).message}\n`)
    return 2
  }
  const verification = await verifyAuditLog(path)
  if (!verification.ok) process.stderr.write(`narthex: warning: the audit log chain is broken at line ${verification.line}; run 'narthex audit --verify'\n`)
  if (verification.entries === 0 && verification.ok) return 0
  for await (const { entry } of readAuditLog(path)) {
    if (!entry) continue
    if (options.path && !entry.storePath.includes(options.path)) continue
    const t = Date.parse(entry.time)
    if (since !== undefined && t < since) continue
    if (until !== undefined && t >= until) continue
    out(options.json ? JSON.stringify(entry) : formatEntry(entry))
  }
  return 0
}
