/**
 * Helpers around binary-cache directories made by real Nix: reading their
 * narinfos, and making hostile variants of them.
 */
import { execFileSync } from 'node:child_process'
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { formatNarInfo, parseNarInfo, parseSecretKey, sha256Of, signNarInfo, type NarInfo } from '../../src/protocol/index.js'

/** The hash part of a store path. */
export function hashPartOf(storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)
}

/** The parsed narinfo of `storePath` in the cache directory `dir`. */
export async function readCacheNarInfo(dir: string, storePath: string): Promise<NarInfo> {
  return parseNarInfo(await readFile(join(dir, `${hashPartOf(storePath)}.narinfo`), 'utf8'))
}

const DECODERS: Record<string, [string, string[]]> = { xz: ['xz', ['-dc']], zstd: ['zstd', ['-dc']], bzip2: ['bzip2', ['-dc']] }
const ENCODERS: Record<string, [string, string[]]> = { xz: ['xz', ['-c']], zstd: ['zstd', ['-c', '-q']], bzip2: ['bzip2', ['-c']] }

function transcode(data: Buffer, tool: [string, string[]] | undefined): Buffer {
  return tool ? execFileSync(tool[0], tool[1], { input: data, maxBuffer: 1 << 30 }) : data
}

/**
 * Rewrites the NAR of `storePath` in cache `dir`: its first occurrence of `find`
 * becomes `replace` (same length), recompressed with the cache's compression and
 * written back under the same URL. Returns the narinfo, the new NAR and file.
 */
async function rewriteNar(dir: string, storePath: string, find: string, replace: string): Promise<{ info: NarInfo; nar: Buffer; compressed: Buffer }> {
  if (find.length !== replace.length) throw new Error('the NAR keeps its size: same-length strings only')
  const info = await readCacheNarInfo(dir, storePath)
  const file = join(dir, info.url)
  const nar = transcode(await readFile(file), DECODERS[info.compression])
  const at = nar.indexOf(find)
  if (at < 0) throw new Error(`${JSON.stringify(find)} not found in the NAR of ${storePath}`)
  nar.write(replace, at, 'latin1')
  const compressed = transcode(nar, ENCODERS[info.compression])
  await writeFile(file, compressed)
  return { info, nar, compressed }
}

/**
 * Replaces the NAR of `storePath` in cache `dir` by a validly compressed NAR
 * whose contents differ from what the signed NarHash covers. FileHash and
 * FileSize (unsigned) are updated to match, as a careful attacker would do, so
 * only NarHash verification can catch it.
 */
export async function tamperNar(dir: string, storePath: string, find: string, replace: string): Promise<void> {
  const { info, compressed } = await rewriteNar(dir, storePath, find, replace)
  const tampered: NarInfo = { ...info, fileHash: sha256Of(compressed), fileSize: compressed.length }
  await writeFile(join(dir, `${hashPartOf(storePath)}.narinfo`), formatNarInfo(tampered))
}

/**
 * Makes `storePath` in cache `dir` a forgery, as the holder of a trusted key
 * can: the NAR contents change (`find` → `replace`), NarHash, NarSize, FileHash
 * and FileSize are recomputed, and the narinfo is signed with `secretKey` only.
 */
export async function forgeNar(dir: string, storePath: string, find: string, replace: string, secretKey: string): Promise<NarInfo> {
  const { info, nar, compressed } = await rewriteNar(dir, storePath, find, replace)
  const forged = signNarInfo(
    { ...info, narHash: sha256Of(nar), narSize: nar.length, fileHash: sha256Of(compressed), fileSize: compressed.length, sigs: [] },
    parseSecretKey(secretKey),
  )
  await writeFile(join(dir, `${hashPartOf(storePath)}.narinfo`), formatNarInfo(forged))
  return forged
}

/** Copies the narinfo and NAR file of each store path from one cache directory into another. */
export async function copyCacheEntries(from: string, to: string, storePaths: string[]): Promise<void> {
  await mkdir(join(to, 'nar'), { recursive: true })
  for (const p of storePaths) {
    const info = await readCacheNarInfo(from, p)
    await copyFile(join(from, `${hashPartOf(p)}.narinfo`), join(to, `${hashPartOf(p)}.narinfo`))
    await copyFile(join(from, info.url), join(to, info.url))
  }
  await copyFile(join(from, 'nix-cache-info'), join(to, 'nix-cache-info')).catch(() => undefined)
}
