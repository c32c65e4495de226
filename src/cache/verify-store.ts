/**
 * Re-verifies stored NAR files against their index records: FileHash and
 * FileSize of the file, NarHash, NarSize and the NAR grammar of its
 * decompressed contents. A corrupt file (bit rot, a disk fault, a hand edit) is
 * moved to `<dataDir>/quarantine/` and its index entry removed, so it is fetched
 * again on the next request instead of being served.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { isNarthexError } from '../errors.js'
import { parseNixHash } from '../protocol/index.js'
import type { Store } from '../store/index.js'
import { verifyNarFile } from './verify-file.js'

/** One corrupt file found by {@link verifyStore}. */
export interface CorruptNar {
  readonly fileName: string
  readonly code: string
  readonly message: string
}

/** What {@link verifyStore} found. */
export interface StoreVerification {
  checked: number
  bytes: number
  corrupt: CorruptNar[]
}

/**
 * Checks every stored NAR file, calling `onProgress` after each.
 * @param quarantine move corrupt files aside and drop their index entries (default true).
 */
export async function verifyStore(
  store: Store,
  options: { quarantine?: boolean; onProgress?: (done: number, total: number) => void } = {},
): Promise<StoreVerification> {
  const entries: Array<[string, Awaited<ReturnType<Store['getNarFile']>>]> = []
  for await (const entry of store.narFiles()) entries.push(entry)
  const result: StoreVerification = { checked: 0, bytes: 0, corrupt: [] }
  for (const [fileName, record] of entries) {
    if (!record) continue
    try {
      await verifyNarFile(store.narPath(fileName), {
        compression: record.compression,
        fileHash: parseNixHash(record.fileHash),
        fileSize: record.fileSize,
        narHash: parseNixHash(record.narHash),
        narSize: record.narSize,
      })
    } catch (err) {
      const code = isNarthexError(err) ? err.code : 'NAR_INVALID'
      result.corrupt.push({ fileName, code, message: (err as Error).message })
      if (options.quarantine !== false) {
        const dir = join(store.dataDir, 'quarantine')
        await mkdir(dir, { recursive: true })
        await store.removeNar(fileName, join(dir, `${Date.now()}-${fileName}`))
      }
    }
    result.checked++
    result.bytes += record.fileSize
    options.onProgress?.(result.checked, entries.length)
  }
  return result
}
