/**
 * `narthex import DIR`: loads a `file://` binary cache directory (made by
 * `narthex export` or `nix copy --to file://`) into the store. Each path goes
 * through the same checks as a push: signatures by the configured import keys,
 * no conflict with a NarHash admitted before, and a NAR that verifies. Imported
 * paths are pinned.
 */
import { constants as fsConstants } from 'node:fs'
import { copyFile, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isHashPart, parseNarInfo } from '../protocol/index.js'
import type { Store } from '../store/index.js'
import type { PathFailure } from './mirror.js'
import type { PushReceiver } from './push.js'

/** Imports every narinfo of `dir`; calls `onProgress` after each. */
export async function importCache(
  receiver: PushReceiver,
  store: Store,
  dir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<{ imported: string[]; unchanged: string[]; failed: PathFailure[] }> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.narinfo') && isHashPart(f.slice(0, -'.narinfo'.length)))
  const result = { imported: [] as string[], unchanged: [] as string[], failed: [] as PathFailure[] }
  for (const [i, f] of files.entries()) {
    const hashPart = f.slice(0, -'.narinfo'.length)
    try {
      const text = await readFile(join(dir, f), 'utf8')
      const info = parseNarInfo(text)
      if (!(await store.getNarInfo(hashPart))) {
        // The NAR waits in uploads/ like a pushed one; the receiver verifies it against the narinfo.
        const name = info.url.startsWith('nar/') ? info.url.slice(4) : info.url
        await copyFile(join(dir, info.url), store.uploadPath(name), fsConstants.COPYFILE_FICLONE)
      }
      const outcome = await receiver.receiveNarInfo(hashPart, text, 'import')
      await store.pin(hashPart)
      result[outcome === 'admitted' ? 'imported' : 'unchanged'].push(hashPart)
    } catch (err) {
      result.failed.push({ path: hashPart, reason: (err as Error).message })
    }
    onProgress?.(i + 1, files.length)
  }
  return result
}
