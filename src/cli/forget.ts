/**
 * `narthex forget STOREPATH`: releases the first-seen NarHash narthex remembers
 * for a path, and drops its narinfo record, so the next request resolves it
 * afresh and may admit another NarHash (an upstream rebuilt the path, or the
 * remembered one came from a key now on `deny.keys`). The NAR file stays until
 * evicted. Audited (`forget`). Needs the data directory to itself (narthex
 * stopped), as `narthex verify` does.
 */
import type { Config } from '../config/index.js'
import { formatNixHash, formatStorePath, parseNarInfo, parseStorePathLoose } from '../protocol/index.js'
import { AuditLog, Store } from '../store/index.js'
import { loadOrCreateSigningKeys } from './keys.js'

/** Exit code of `narthex forget` when narthex remembers nothing of the path. */
export const FORGET_UNKNOWN = 1

/**
 * Runs `narthex forget`; returns the exit code: 0 when something was released,
 * {@link FORGET_UNKNOWN} when neither a record nor a first-seen NarHash exists.
 * @throws NarthexError STORE_PATH_INVALID for text that is no store path or hash
 *   part; STORE_IO when the data directory is in use by a running narthex.
 */
export async function runForget(config: Config, text: string, out: (line: string) => void): Promise<number> {
  const path = parseStorePathLoose(text)
  const { dataDir } = config
  const { store } = await Store.open(dataDir)
  try {
    const { record, firstNarHash } = await store.dropNarInfo(path.hashPart, { releasePin: true })
    if (!record && firstNarHash === undefined) {
      out(`${text}: narthex has neither admitted it nor remembers a NarHash for it; nothing to forget`)
      return FORGET_UNKNOWN
    }
    let storePath = path.name ? formatStorePath(path) : path.hashPart
    let admitted: string | undefined
    if (record) {
      try {
        const info = parseNarInfo(record.narinfo)
        storePath = formatStorePath(info.storePath)
        admitted = formatNixHash(info.narHash)
      } catch {
        // An unreadable record is forgotten all the same.
      }
    }
    const narHashes = [...new Set([firstNarHash, admitted].filter((h): h is string => h !== undefined))]
    // Signed like narthex's own appends, so the audit checkpoint covers the entry.
    const { keys } = loadOrCreateSigningKeys(config.signingKeyFiles, config.signingKeyName)
    const audit = await AuditLog.open(dataDir, { signingKey: keys[0] })
    await audit.append({
      decision: 'forget',
      storePath,
      ...(narHashes[0] ? { narHash: narHashes[0] } : {}),
      ...(narHashes.length > 1 ? { narHashes } : {}),
      ...(record ? { upstreams: [record.origin], signers: record.signers } : {}),
      message: `released the first-seen NarHash${firstNarHash ? ` ${firstNarHash}` : ' (none was remembered)'}${record ? ' and dropped the admitted narinfo' : ''}`,
    })
    await audit.flush()
    out(`${storePath}: forgot ${firstNarHash ? `the first-seen NarHash ${firstNarHash}` : 'no first-seen NarHash'}${record ? ` and the narinfo admitted from ${record.origin}` : ''}; the next request resolves it afresh`)
    return 0
  } finally {
    await store.close()
  }
}
