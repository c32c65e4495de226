/**
 * Garbage collection of the store's NAR files: least recently used first,
 * down to a byte target, keeping what could not be fetched again.
 */
import type { Sublevels } from './store-index.js'

/** What {@link collectGarbage} needs of the store. */
export interface GcContext {
  readonly ix: Sublevels
  /** Bytes of the indexed NAR files now (it shrinks as files are removed). */
  readonly totalBytes: () => number
  readonly flushAccess: () => Promise<void>
  readonly removeNar: (fileName: string) => Promise<void>
  readonly narInfosForFile: (fileName: string) => Promise<string[]>
  /**
   * True when the store is backed by a bucket: a NAR uploaded there can be
   * fetched again, so a path with no upstream source (a push) no longer keeps
   * it; one still waiting for its upload does.
   */
  readonly bucketBacked: boolean
}

/**
 * Evicts least-recently-used NAR files until the store holds at most
 * `targetBytes`. A NAR is kept when any path using it is pinned or has no
 * upstream to fetch it again from (pushed and imported paths, unless the
 * bucket holds it), and while it waits for its upload to the bucket.
 * @returns the files evicted and the bytes freed.
 */
export async function collectGarbage(ctx: GcContext, targetBytes: number): Promise<{ evicted: string[]; freedBytes: number }> {
  const { ix } = ctx
  const evicted: string[] = []
  let freedBytes = 0
  await ctx.flushAccess()
  const candidates: Array<{ name: string; size: number; used: number }> = []
  for await (const [name, rec] of ix.nars.iterator()) {
    candidates.push({ name, size: rec.fileSize, used: (await ix.access.get(name)) ?? rec.storedAt })
  }
  candidates.sort((a, b) => a.used - b.used)
  for (const c of candidates) {
    if (ctx.totalBytes() <= targetBytes) break
    if (await isKept(ctx, c.name)) continue
    await ctx.removeNar(c.name)
    evicted.push(c.name)
    freedBytes += c.size
  }
  return { evicted, freedBytes }
}

async function isKept(ctx: GcContext, fileName: string): Promise<boolean> {
  const { ix } = ctx
  // Entries a bucket-backed run left mean nothing once the bucket is gone from the config.
  if (ctx.bucketBacked && (await ix.uploads.get(fileName)) !== undefined) return true
  for (const hashPart of await ctx.narInfosForFile(fileName)) {
    if ((await ix.pins.get(hashPart)) !== undefined) return true
    const rec = await ix.narinfos.get(hashPart)
    if (rec && rec.sources.length === 0 && !ctx.bucketBacked) return true
  }
  return false
}
