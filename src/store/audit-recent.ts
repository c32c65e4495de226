/**
 * The end of the audit log, read backwards from its last bytes only, for the
 * status page: a log of millions of entries costs one bounded read.
 */
import { open } from 'node:fs/promises'
import type { AuditEntry } from './audit.js'

/**
 * The last `limit` entries among the log's final `maxBytes` that `keep`
 * accepts, newest first. A missing log has none; a line cut by the window or
 * not JSON is skipped.
 */
export async function readAuditTail(
  path: string,
  keep: (entry: AuditEntry) => boolean,
  options: { limit?: number; maxBytes?: number } = {},
): Promise<AuditEntry[]> {
  const limit = options.limit ?? 20
  const maxBytes = options.maxBytes ?? 256 * 1024
  let fh
  try {
    fh = await open(path, 'r')
  } catch {
    return []
  }
  try {
    const size = (await fh.stat()).size
    const len = Math.min(size, maxBytes)
    const buf = Buffer.alloc(len)
    await fh.read(buf, 0, len, size - len)
    const lines = buf.toString('utf8').split('\n')
    // The first line may start mid-entry unless the window reaches the start of the file.
    if (len < size) lines.shift()
    const out: AuditEntry[] = []
    for (let i = lines.length - 1; i >= 0 && out.length < limit; i--) {
      const line = lines[i].trim()
      if (line === '') continue
      let entry: AuditEntry
      try {
        entry = JSON.parse(line) as AuditEntry
      } catch {
        continue
      }
      if (keep(entry)) out.push(entry)
    }
    return out
  } finally {
    await fh.close()
  }
}
