/**
 * The deny lists (the config's `deny`): keys whose signatures never count and
 * store paths refused whatever the rules say. Pure: no I/O.
 *
 * A denied key is written either as a full public key (`name:base64`) or as a
 * bare key name:
 * - a full key denies its 32 key bytes under any name: whoever holds the leaked
 *   secret can label a signature with any name, and it verifies against every
 *   trusted entry carrying those bytes;
 * - a bare name denies every key of that name: signatures are looked up by name,
 *   so no `Sig:` line of that name counts (the form to use when only the name is
 *   known, e.g. from a log's `signers`).
 *
 * A denied path is written as a store path or a bare hash part; either way it is
 * the hash part that is denied, so an upstream naming the hash part differently
 * does not escape the list.
 */
import { NarthexError } from '../errors.js'
import { formatStorePath, isHashPart, parsePublicKey, parseStorePath, type PublicKey } from '../protocol/index.js'

/** The compiled deny lists. */
export interface DenyList {
  /** Key names denied outright. */
  readonly keyNames: ReadonlySet<string>
  /** Key bytes (base64) denied under any name. */
  readonly keyBytes: ReadonlySet<string>
  /** Denied hash parts, with the store path name they were written with (if any), for messages. */
  readonly hashParts: ReadonlyMap<string, string | undefined>
}

/** The config's `deny` section, as the policy needs it. */
export interface DenyInput {
  readonly keys?: readonly string[] | undefined
  readonly paths?: readonly string[] | undefined
}

/**
 * Compiles the deny lists.
 * @throws NarthexError KEY_INVALID or STORE_PATH_INVALID for an entry the config validation would reject.
 */
export function compileDenyList(input: DenyInput | undefined): DenyList {
  const keyNames = new Set<string>()
  const keyBytes = new Set<string>()
  for (const k of input?.keys ?? []) {
    if (k.includes(':')) keyBytes.add(Buffer.from(parsePublicKey(k).key).toString('base64'))
    else keyNames.add(k)
  }
  const hashParts = new Map<string, string | undefined>()
  for (const p of input?.paths ?? []) {
    if (p.startsWith('/')) {
      const sp = parseStorePath(p)
      hashParts.set(sp.hashPart, sp.name)
    } else if (isHashPart(p)) hashParts.set(p, hashParts.get(p))
    else throw new NarthexError('STORE_PATH_INVALID', `${JSON.stringify(p)} is neither a store path nor a hash part`)
  }
  return { keyNames, keyBytes, hashParts }
}

/** True when signatures by `key` may count anywhere (rules, push, import): it is not on `deny.keys`. */
export function countsAsTrusted(policy: { readonly deny: DenyList }, key: PublicKey): boolean {
  const { keyNames, keyBytes } = policy.deny
  return !keyNames.has(key.name) && !keyBytes.has(Buffer.from(key.key).toString('base64'))
}

/** `keys` without those on `deny.keys`, order kept. */
export function withoutDeniedKeys(policy: { readonly deny: DenyList }, keys: readonly PublicKey[]): PublicKey[] {
  return keys.filter((k) => countsAsTrusted(policy, k))
}

/**
 * Why a path is on `deny.paths`, or undefined when it is not. The hash part
 * decides; `name` (the name an upstream or a request gave) only completes the message.
 */
export function denyReason(policy: { readonly deny: DenyList }, hashPart: string, name?: string): string | undefined {
  const hashParts = policy.deny.hashParts
  if (!hashParts.has(hashPart)) return undefined
  const listed = hashParts.get(hashPart)
  const what = name ? formatStorePath({ hashPart, name }) : hashPart
  return `${what} is denied (deny.paths lists ${listed ? formatStorePath({ hashPart, name: listed }) : `the hash part ${hashPart}`})`
}

/** True when the path is on `deny.paths` (see {@link denyReason}). */
export function isDenied(policy: { readonly deny: DenyList }, hashPart: string, name?: string): boolean {
  return denyReason(policy, hashPart, name) !== undefined
}
