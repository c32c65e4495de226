/**
 * `narthex verify`: re-hash every stored NAR against its index record and
 * quarantine corrupt ones. Needs the data directory to itself (narthex stopped).
 */
import { verifyStore } from '../cache/index.js'
import { Store } from '../store/index.js'

/** Runs `narthex verify`; returns the exit code (1 when anything was corrupt). */
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
      out(`checked ${result.checked} NAR file(s), ${(result.bytes / 1024 ** 2).toFixed(1)} MiB: ${result.corrupt.length} corrupt`)
      for (const c of result.corrupt) out(`  ${c.fileName}: ${c.code}: ${c.message}${options.quarantine ? ' (quarantined)' : ''}`)
    }
    return result.corrupt.length > 0 ? 1 : 0
  } finally {
    await store.close()
  }
}
