/**
 * `narthex verify`: re-hash every stored NAR against its index record and
 * quarantine corrupt ones. Needs the data directory to itself (narthex stopped).
 */
import { verifyStore } from '../cache/index.js'
import { Store } from '../store/index.js'

/** Exit code of `narthex verify` when something stored is corrupt. */
export const VERIFY_CORRUPT = 1
/** Exit code of `narthex verify` when nothing checked is corrupt but some files could not be checked on this machine. */
export const VERIFY_UNCHECKED = 2

/**
 * Runs `narthex verify`; returns the exit code: 0 when every file verified,
 * {@link VERIFY_CORRUPT} when anything was corrupt, else {@link VERIFY_UNCHECKED}
 * when some files could not be checked (their compression cannot be decoded here).
 */
export async function runVerify(dataDir: string, options: { quarantine: boolean; json: boolean }, out: (line: string) => void): Promise<number> {
  const { store, recovery } = await Store.open(dataDir)
  try {
    const repaired = recovery.tempFilesRemoved + recovery.orphanFilesRemoved + recovery.danglingEntriesRemoved
    if (repaired > 0 && !options.json) {
      out(`repaired on open: ${recovery.tempFilesRemoved} temp file(s), ${recovery.orphanFilesRemoved} unindexed file(s), ${recovery.danglingEntriesRemoved} dangling entr(y/ies)`)
    }
    const tty = process.stderr.isTTY && !options.json
    const result = await verifyStore(store, {
      quarantine: options.quarantine,
      onProgress: tty ? (done, total) => process.stderr.write(`\rverifying ${done}/${total}`) : undefined,
    })
    if (tty) process.stderr.write('\n')
    if (options.json) {
      out(JSON.stringify({ ...result, recovery }))
    } else {
      const unchecked = result.unchecked.length > 0 ? `; ${result.unchecked.length} could not be checked on this machine (kept)` : ''
      out(`checked ${result.checked} NAR file(s), ${(result.bytes / 1024 ** 2).toFixed(1)} MiB: ${result.corrupt.length} corrupt${unchecked}`)
      for (const c of result.corrupt) out(`  ${c.fileName}: ${c.code}: ${c.message}${options.quarantine ? ' (quarantined)' : ''}`)
      for (const c of result.unchecked) out(`  ${c.fileName}: not checked: ${c.code}: ${c.message}`)
    }
    if (result.corrupt.length > 0) return VERIFY_CORRUPT
    return result.unchecked.length > 0 ? VERIFY_UNCHECKED : 0
  } finally {
    await store.close()
  }
}
