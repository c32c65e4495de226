/**
 * The deny lists applied to what is already stored. A path admitted before a
 * key or the path itself was put on `deny` must stop being served: its narinfo
 * record is dropped, audited (`deny-applied`), and the next request resolves it
 * afresh, so it may be admitted again from a source the rules still accept.
 *
 * A record is dropped when
 * - its hash part is on `deny.paths`, or
 * - some of the signatures it was admitted on are by a denied key (by name, or
 *   by key bytes under any name: see policy/deny.ts) and the ones left are fewer
 *   than its rule asks for (at least one): it was admitted only thanks to them.
 *
 * The first-seen NarHash stays remembered: a re-admission must offer the same
 * NarHash (another key's signature over the same build passes), and another
 * NarHash is refused (CONFLICT_WITH_ADMITTED) as for any path. When the denied
 * key's NarHash itself is suspect, `narthex forget` releases it.
 *
 * {@link applyDenyToStore} walks the narinfo index once, in the background
 * while narthex serves; the resolver checks each record it reads from the
 * store with {@link storedDenial} before serving it, so a denied path is never
 * served, whether or not the walk has reached it yet.
 */
import type { Logger } from 'pino'
import { denyReason, isDenied, type Policy } from '../policy/index.js'
import { fingerprintNarInfo, formatNixHash, formatStorePath, parseNarInfo, signatureKeyName, verifyFingerprint, type NarInfo } from '../protocol/index.js'
import type { AuditLog, NarInfoRecord, Store } from '../store/index.js'

/** Names of the keys on `deny.keys` whose signatures over `info` verify (or, for bare names, that appear), sorted. */
export function deniedSigners(policy: Pick<Policy, 'deny'>, info: NarInfo): string[] {
  const { keyNames, keyBytes } = policy.deny
  if (keyNames.size === 0 && keyBytes.size === 0) return []
  const denied = new Set<string>()
  const bytes = [...keyBytes].map((b) => new Uint8Array(Buffer.from(b, 'base64')))
  let fingerprint: string | undefined
  for (const sig of info.sigs) {
    const name = signatureKeyName(sig)
    if (keyNames.has(name)) {
      denied.add(name)
      continue
    }
    if (bytes.length === 0) continue
    fingerprint ??= fingerprintNarInfo(info)
    if (verifyFingerprint(fingerprint, sig, bytes.map((key) => ({ name, key })))) denied.add(name)
  }
  return [...denied].sort()
}

/** Why a stored record must no longer be served (see the module comment), or undefined when it may be. */
export function storedDenial(policy: Policy, hashPart: string, record: NarInfoRecord): string | undefined {
  const { keyNames, keyBytes, hashParts } = policy.deny
  // The common cases decide without parsing the narinfo: the walk over a large store stays cheap.
  if (!hashParts.has(hashPart)) {
    if (record.signers.length === 0) return undefined
    if (keyBytes.size === 0 && !record.signers.some((s) => keyNames.has(s))) return undefined
  }
  let info: NarInfo | undefined
  try {
    info = parseNarInfo(record.narinfo)
  } catch {
    info = undefined
  }
  const byPath = denyReason(policy, hashPart, info?.storePath.name)
  if (byPath) return byPath
  if (!info) return undefined
  const denied = deniedSigners(policy, info)
  if (denied.length === 0) return undefined
  const left = record.signers.filter((s) => !denied.includes(s))
  const needed = Math.max(1, policy.rules[record.rule]?.minSignatures ?? 1)
  if (left.length >= needed) return undefined
  return `admitted on signatures by ${denied.join(', ')}, now on deny.keys; ${left.length} of ${needed} required trusted signature(s) left`
}

/** What dropping a denied record needs. */
export interface DenyDeps {
  readonly store: Store
  readonly policy: Policy
  readonly audit: AuditLog
  readonly log: Logger
  /** Told of each dropped hash part, so answers remembered for it are dropped too. */
  readonly onDropped?: (hashPart: string) => void
}

/**
 * Drops `record` of `hashPart` when {@link storedDenial} says so, audits it and logs it.
 * @returns true when it was denied (dropped now, or by someone else meanwhile).
 */
export async function dropIfDenied(deps: DenyDeps, hashPart: string, record: NarInfoRecord): Promise<boolean> {
  const why = storedDenial(deps.policy, hashPart, record)
  if (!why) return false
  const { record: dropped } = await deps.store.dropNarInfo(hashPart)
  // Already dropped by a concurrent request or the walk: audited there.
  if (!dropped) return true
  let storePath = hashPart
  let narHash: string | undefined
  try {
    const info = parseNarInfo(dropped.narinfo)
    storePath = formatStorePath(info.storePath)
    narHash = formatNixHash(info.narHash)
  } catch {
    // An unreadable record is dropped all the same, named by its hash part.
  }
  await deps.audit.append({
    decision: 'deny-applied',
    storePath,
    ...(narHash ? { narHash } : {}),
    upstreams: [dropped.origin],
    signers: dropped.signers,
    ...(dropped.rule >= 0 ? { rule: dropped.rule } : {}),
    reason: isDenied(deps.policy, hashPart) ? 'DENIED' : 'DENIED_KEY',
    message: why,
  })
  deps.log.warn({ path: storePath, origin: dropped.origin, signers: dropped.signers }, `no longer served: ${why}`)
  deps.onDropped?.(hashPart)
  return true
}

/** What {@link applyDenyToStore} did. */
export interface DenySweep {
  /** Records looked at. */
  readonly checked: number
  /** Hash parts whose record was dropped. */
  readonly dropped: readonly string[]
}

/**
 * Walks every stored narinfo once and drops those the deny lists now deny.
 * Nothing to do (and no walk) when both lists are empty. Stops early, with what
 * it did so far, once `signal` is aborted (narthex closing).
 */
export async function applyDenyToStore(deps: DenyDeps, signal?: AbortSignal): Promise<DenySweep> {
  const { keyNames, keyBytes, hashParts } = deps.policy.deny
  const dropped: string[] = []
  let checked = 0
  if (keyNames.size + keyBytes.size + hashParts.size === 0) return { checked, dropped }
  const candidates: Array<[string, NarInfoRecord]> = []
  for await (const [hashPart, record] of deps.store.narInfos()) {
    if (signal?.aborted) break
    checked++
    if (storedDenial(deps.policy, hashPart, record)) candidates.push([hashPart, record])
  }
  // Dropped after the walk: the iterator reads a snapshot, and writes during it would only slow it.
  for (const [hashPart, record] of candidates) {
    if (signal?.aborted) break
    if (await dropIfDenied(deps, hashPart, record)) dropped.push(hashPart)
  }
  return { checked, dropped }
}
