/**
 * Mirroring and exporting whole closures, for seeding air-gapped networks:
 * `mirror` pulls closures through the same policy and verification as a client
 * request would and pins them; `export` writes a plain `file://` binary cache
 * of closures already in the store, signed by narthex.
 */
import { constants as fsConstants } from 'node:fs'
import { copyFile, mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NarthexError } from '../errors.js'
import { formatCacheInfo, formatNarInfo, narUrl, parseNarInfo, parseNarUrl, parseStorePathBase, STORE_DIR } from '../protocol/index.js'
import type { Store } from '../store/index.js'
import type { Cache } from './cache.js'

/** A path that could not be mirrored or exported, and why. */
export interface PathFailure {
  readonly path: string
  readonly reason: string
}

/** Progress of a closure walk: paths done and paths known so far. */
export type ClosureProgress = (done: number, known: number) => void

/**
 * Walks the closures of `roots` (hash parts) breadth-first, `concurrency` paths
 * at a time, calling `visit` for each path once; `visit` returns the hash parts
 * of the path's references, or throws to record a failure.
 */
export async function walkClosure(
  roots: readonly string[],
  concurrency: number,
  visit: (hashPart: string) => Promise<string[]>,
  onProgress?: ClosureProgress,
): Promise<{ done: string[]; failed: PathFailure[] }> {
  const seen = new Set(roots)
  const queue = [...roots]
  const done: string[] = []
  const failed: PathFailure[] = []
  const worker = async () => {
    for (let hashPart = queue.shift(); hashPart !== undefined; hashPart = queue.shift()) {
      try {
        for (const ref of await visit(hashPart)) {
          if (!seen.has(ref)) {
            seen.add(ref)
            queue.push(ref)
          }
        }
        done.push(hashPart)
      } catch (err) {
        failed.push({ path: hashPart, reason: (err as Error).message })
      }
      onProgress?.(done.length + failed.length, seen.size)
    }
  }
  // Workers that find the queue empty stop; the others keep pulling what the walk adds.
  while (queue.length > 0) {
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker))
  }
  return { done, failed }
}

function referencesOf(narinfoText: string): string[] {
  const info = parseNarInfo(narinfoText)
  return info.references.map((r) => parseStorePathBase(r).hashPart).filter((h) => h !== info.storePath.hashPart)
}

/**
 * Fetches the closures of `roots` into the store through `cache` (policy,
 * signatures, verification as for any client) and pins every path.
 */
export async function mirrorClosures(
  cache: Cache,
  store: Store,
  roots: readonly string[],
  options: { concurrency?: number; onProgress?: ClosureProgress } = {},
): Promise<{ mirrored: string[]; failed: PathFailure[] }> {
  const { done, failed } = await walkClosure(
    roots,
    options.concurrency ?? 8,
    async (hashPart) => {
      const answer = await cache.getNarInfo(hashPart)
      if (answer.kind === 'absent') throw new NarthexError('NOT_FOUND', `${hashPart}: no eligible upstream has it, or policy refuses it`)
      if (answer.kind === 'unavailable') throw new NarthexError('UPSTREAM_UNAVAILABLE', `${hashPart}: an eligible upstream could not be asked`)
      const served = parseNarUrl(parseNarInfo(answer.text).url)
      if (!served) throw new NarthexError('NOT_FOUND', `${hashPart}: its narinfo names no NAR narthex serves`)
      const nar = await cache.getNar(served.fileName, served.hashPart)
      if (nar.kind === 'following') {
        await nar.follower.completed()
      } else if (nar.kind !== 'stored') {
        throw new NarthexError('UPSTREAM_UNAVAILABLE', `${hashPart}: its NAR could not be fetched (${nar.kind})`)
      }
      await store.pin(hashPart)
      return referencesOf(answer.text)
    },
    options.onProgress,
  )
  return { mirrored: done, failed }
}

/**
 * Writes a `file://` binary cache of the closures of `roots` (default: every
 * pinned path) to `dir`: `nix-cache-info`, narinfos signed by narthex, and the
 * NAR files (reflinked or copied). Every path of the closures must be stored.
 */
export async function exportClosures(
  cache: Cache,
  store: Store,
  dir: string,
  roots: readonly string[] | undefined,
  options: { priority?: number; onProgress?: ClosureProgress } = {},
): Promise<{ exported: string[]; failed: PathFailure[] }> {
  const start: string[] = []
  if (roots) start.push(...roots)
  else for await (const hashPart of store.pinned()) start.push(hashPart)
  await mkdir(join(dir, 'nar'), { recursive: true })
  const { done, failed } = await walkClosure(
    start,
    4,
    async (hashPart) => {
      const record = await store.getNarInfo(hashPart)
      if (!record) throw new NarthexError('NOT_FOUND', `${hashPart} is not in the store (mirror it first)`)
      const info = parseNarInfo(await cache.formatServed(record))
      const fileName = parseNarUrl(info.url)?.fileName
      if (fileName === undefined) throw new NarthexError('NOT_FOUND', `${hashPart}: its narinfo names no NAR narthex serves`)
      // A file:// cache keeps Nix's flat layout, which `import` reads back. The URL is not signed.
      const text = formatNarInfo({ ...info, url: narUrl(fileName) })
      if (!(await store.getNarFile(fileName))) throw new NarthexError('NOT_FOUND', `${hashPart}: its NAR is not stored (evicted?); mirror it again`)
      const dest = join(dir, 'nar', fileName)
      await copyFile(store.narPath(fileName), `${dest}.part`, fsConstants.COPYFILE_FICLONE)
      await rename(`${dest}.part`, dest)
      await writeFile(join(dir, `${hashPart}.narinfo.part`), text)
      await rename(join(dir, `${hashPart}.narinfo.part`), join(dir, `${hashPart}.narinfo`))
      return referencesOf(text)
    },
    options.onProgress,
  )
  await writeFile(join(dir, 'nix-cache-info'), formatCacheInfo({ storeDir: STORE_DIR, wantMassQuery: true, priority: options.priority ?? 40 }))
  return { exported: done, failed }
}
