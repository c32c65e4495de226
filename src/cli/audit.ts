/**
 * `narthex audit`: print or verify the audit log, and check it against signed
 * checkpoints an auditor kept (files, directories of them, or a narthex's
 * `/audit/checkpoint` URL).
 */
import { readFileSync } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { MAX_CHECKPOINT_BYTES, parsePublicKey, parseSecretKey, toPublicKey, verifyCheckpoint, type Checkpoint, type PublicKey } from '../protocol/index.js'
import { auditLogPath, compareWithCheckpoint, listTornTails, readAuditLog, verifyAuditLog, type AuditEntry, type CheckpointComparison } from '../store/index.js'
import { loadUndici } from '../undici.js'

/** Filters of `narthex audit`. */
export interface AuditOptions {
  readonly verify?: boolean | undefined
  readonly path?: string | undefined
  readonly since?: string | undefined
  readonly until?: string | undefined
  readonly json?: boolean | undefined
  /** Checkpoints to verify the log against (with `verify`): files, directories of them, or URLs. */
  readonly checkpoint?: readonly string[] | undefined
  /** The public key checkpoints must be signed with (`name:base64`, or a file holding it). */
  readonly publicKey?: string | undefined
  /** narthex's signing key file, whose public half is used when `publicKey` is not given. */
  readonly signingKeyFile?: string | undefined
}

/** Bad usage: the command ends with exit code 2. */
class UsageError extends Error {}

/** A checkpoint URL that could not be fetched: the check fails (exit code 1). */
class FetchError extends Error {}

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
  if (options.checkpoint?.length && !options.verify) {
    process.stderr.write('narthex: --checkpoint needs --verify\n')
    return 2
  }
  if (options.verify) {
    try {
      return await verify(path, options, out)
    } catch (err) {
      if (!(err instanceof UsageError || err instanceof FetchError)) throw err
      process.stderr.write(`narthex: ${err.message}\n`)
      return err instanceof UsageError ? 2 : 1
    }
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

async function verify(path: string, options: AuditOptions, out: (line: string) => void): Promise<number> {
  const sources = options.checkpoint ?? []
  const keys = sources.length > 0 ? [checkpointKey(options)] : []
  const notes = await loadCheckpoints(sources)
  const checkpoints: Array<{ source: string; checkpoint: Checkpoint }> = []
  let failed = false
  for (const { source, text } of notes) {
    try {
      if (text === undefined) throw new Error(`larger than ${MAX_CHECKPOINT_BYTES} bytes: not a checkpoint`)
      checkpoints.push({ source, checkpoint: verifyCheckpoint(text, keys) })
    } catch (err) {
      out(`checkpoint ${source}: FAILED: ${(err as Error).message}`)
      failed = true
    }
  }
  const result = await verifyAuditLog(path, { hashesAt: checkpoints.map((c) => c.checkpoint.count) })
  if (result.ok) out(`audit log ${path}: ${result.entries} entries, chain intact`)
  else {
    out(`audit log ${path}: BROKEN at line ${result.line}${result.seq !== undefined ? ` (entry ${result.seq})` : ''}: ${result.problem}`)
    failed = true
  }
  if (result.incompleteTail) {
    out(`audit log ${path}: line ${result.incompleteTail.line} is incomplete (${result.incompleteTail.bytes} bytes, a crash mid-append); narthex sets it aside when it next opens the log`)
  }
  for (const side of await listTornTails(path)) out(`set aside earlier: ${side.file} (${side.bytes} bytes, the torn last line of a crash mid-append)`)
  const facts = {
    entries: result.entries,
    heads: result.heads ?? new Map<number, string>(),
    broken: result.ok ? undefined : { seq: result.seq, line: result.line, problem: result.problem },
  }
  const compared = checkpoints.map(({ source, checkpoint }) => ({ source, ...compareWithCheckpoint(facts, checkpoint) }))
  for (const c of compared) {
    const what = `checkpoint ${c.source} (${c.checkpoint.count} ${c.checkpoint.count === 1 ? 'entry' : 'entries'}, signed by ${c.checkpoint.keyName} at ${c.checkpoint.time})`
    out(c.ok ? `${what}: the log holds exactly these entries` : `${what}: FAILED: ${c.problem}`)
    if (!c.ok) failed = true
  }
  const narrowed = firstDifference(compared)
  if (narrowed) out(narrowed)
  return failed ? 1 : 0
}

/** With several checkpoints, where the first rewritten entry lies: after the last that matches, at or before the first that does not. */
function firstDifference(compared: readonly CheckpointComparison[]): string | undefined {
  const rewritten = compared.filter((c) => !c.ok && c.kind === 'rewritten').map((c) => c.checkpoint.count)
  if (rewritten.length === 0) return undefined
  const firstBad = Math.min(...rewritten)
  const lastGood = Math.max(0, ...compared.filter((c) => c.ok && c.checkpoint.count < firstBad).map((c) => c.checkpoint.count))
  if (lastGood + 1 === firstBad) return `entry ${firstBad} is the first entry that differs from what the checkpoints commit to`
  // Without an earlier checkpoint that still matches, "at or before entry N" was already said.
  return lastGood > 0 ? `the first entry that differs is one of entries ${lastGood + 1} to ${firstBad} (the checkpoint of entry ${lastGood} still matches)` : undefined
}

/** The public key checkpoints are checked against. */
function checkpointKey(options: AuditOptions): PublicKey {
  if (options.publicKey !== undefined) {
    try {
      return parsePublicKey(options.publicKey)
    } catch {
      let text: string
      try {
        text = readFileSync(options.publicKey, 'utf8')
      } catch {
        throw new UsageError(`--public-key: neither a public key (name:base64) nor a readable file: ${options.publicKey}`)
      }
      try {
        return parsePublicKey(text)
      } catch (err) {
        throw new UsageError(`--public-key ${options.publicKey}: ${(err as Error).message}`)
      }
    }
  }
  if (!options.signingKeyFile) throw new UsageError('checking a checkpoint needs narthex\'s public key: give --public-key')
  let text: string
  try {
    text = readFileSync(options.signingKeyFile, 'utf8')
  } catch {
    throw new UsageError(`cannot read the signing key file ${options.signingKeyFile}; give narthex's public key with --public-key`)
  }
  try {
    return toPublicKey(parseSecretKey(text))
  } catch (err) {
    throw new UsageError(`signing key file ${options.signingKeyFile}: ${(err as Error).message}`)
  }
}

/** Reads each checkpoint source: a URL, a file, or every file of a directory (sorted by name); `text` is undefined when it is too large. */
async function loadCheckpoints(sources: readonly string[]): Promise<Array<{ source: string; text: string | undefined }>> {
  const notes: Array<{ source: string; text: string | undefined }> = []
  for (const source of sources) {
    if (/^https?:\/\//i.test(source)) {
      notes.push({ source, text: await fetchCheckpoint(source) })
      continue
    }
    let isDir: boolean
    try {
      isDir = (await stat(source)).isDirectory()
    } catch {
      throw new UsageError(`--checkpoint: no such file, directory or URL: ${source}`)
    }
    const files = isDir ? (await readdir(source)).sort().map((n) => join(source, n)) : [source]
    for (const file of files) {
      const info = await stat(file)
      if (isDir && !info.isFile()) continue
      notes.push({ source: file, text: info.size > MAX_CHECKPOINT_BYTES ? undefined : await readFile(file, 'utf8') })
    }
    if (isDir && files.length === 0) throw new UsageError(`--checkpoint: the directory ${source} holds no checkpoints`)
  }
  return notes
}

async function fetchCheckpoint(url: string): Promise<string | undefined> {
  try {
    const { request } = await loadUndici()
    const res = await request(url, { headersTimeout: 10_000, bodyTimeout: 10_000 })
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length
      if (size > MAX_CHECKPOINT_BYTES) {
        res.body.destroy()
        return undefined
      }
      chunks.push(chunk as Buffer)
    }
    const text = Buffer.concat(chunks).toString('utf8')
    if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}${text ? `: ${text.trim().slice(0, 200)}` : ''}`)
    return text
  } catch (err) {
    throw new FetchError(`--checkpoint ${url}: cannot fetch it (${(err as Error).message})`)
  }
}
