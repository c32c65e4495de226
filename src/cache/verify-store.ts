/**
 * Re-verifies stored NAR files against their index records: FileHash and
 * FileSize of the file, NarHash, NarSize and the NAR grammar of its
 * decompressed contents. A corrupt file (bit rot, a disk fault, a hand edit) is
 * moved to `<dataDir>/quarantine/` and its index entry removed, so it is fetched
 * again on the next request instead of being served. A file this machine cannot
 * decode (no decoder for its compression) is not checked, and stays.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { parseNixHash } from '../protocol/index.js'
import { classifyNarError, isUncheckable, type Store } from '../store/index.js'
import { verifyNarFile } from './verify-file.js'

/** One file {@link verifyStore} found corrupt, or could not check. */
export interface CorruptNar {
  readonly fileName: string
  readonly code: string
  readonly message: string
}

/** What {@link verifyStore} found. */
export interface StoreVerification {
  /** Files read to the end: intact or corrupt. */
  checked: number
  /** Bytes of the checked files. */
  bytes: number
  corrupt: CorruptNar[]
  /** Files that could not be checked here (their compression cannot be decoded); kept as they are. */
  unchecked: CorruptNar[]
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
  const result: StoreVerification = { checked: 0, bytes: 0, corrupt: [], unchecked: [] }
  let done = 0
  for (const [fileName, record] of entries) {
    if (!record) continue
    const path = store.narPath(fileName)
    try {
      await verifyNarFile(path, {
        compression: record.compression,
        fileHash: parseNixHash(record.fileHash),
        fileSize: record.fileSize,
        narHash: parseNixHash(record.narHash),
        narSize: record.narSize,
      })
      result.checked++
      result.bytes += record.fileSize
    } catch (err) {
      const error = classifyNarError(err, { file: path })
      const found = { fileName, code: error.code, message: error.message }
      if (isUncheckable(error)) {
        result.unchecked.push(found)
      } else {
        result.corrupt.push(found)
        result.checked++
        result.bytes += record.fileSize
        if (options.quarantine !== false) {
          const dir = join(store.dataDir, 'quarantine')
          await mkdir(dir, { recursive: true })
          await store.removeNar(fileName, join(dir, `${Date.now()}-${fileName}`))
        }
      }
    }
    options.onProgress?.(++done, entries.length)
  }
  return result
}
