/**
 * A narthex data directory holding 1,000,000 stored NARs, written directly (not
 * through narthex, which would take hours) the way src/store/store.ts lays it
 * out: a LevelDB index at `<dataDir>/index` with the sublevels `narinfo`
 * (hash part → NarInfoRecord, JSON), `nar` (file name → NarFileRecord, JSON),
 * `first` (hash part → first NarHash) and `bynar` (`<file>/<hash part>` → ''),
 * and the NAR files at `nar/<first 2 chars>/<NarHash nix32>.nar`.
 *
 * Every path is a real, small NAR (one regular file with a distinct line of
 * text, ~130 bytes, `Compression: none`), its narinfo made with src/protocol
 * and signed by a key of its own (`bench-big-1`, as if an upstream had signed
 * it), so narthex serves it, and `narthex verify` would accept it.
 *
 * Kept in `bench/.data/bigstore-v<VERSION>-<count>/` and reused while `meta.json`
 * there matches. Run it alone to make (or check) it:
 *
 *   node --import tsx bench/proxy/big-store.ts [--count N]
 *
 * The suite runs it as a child process (with a bigger libuv pool) when its
 * startup scenario needs the store.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Level } from 'level'
import {
  encodeNix32,
  formatNarInfo,
  formatNixHash,
  generateSecretKey,
  parseStorePath,
  sha256Of,
  signNarInfo,
  type NarInfo,
} from '../../src/protocol/index.js'
import type { NarFileRecord, NarInfoRecord } from '../../src/store/index.js'
import { writeNar } from '../../test/helpers/nar-writer.js'

/** Bump when the layout or the records change: an older store is made anew. */
export const BIG_STORE_VERSION = 1
export const BIG_STORE_COUNT = 1_000_000
/** The upstream name the records' sources give (the suite's narthex calls its upstream `up`). */
const UPSTREAM = 'up'
const KEY_NAME = 'bench-big-1'
// Index writes per LevelDB batch (4 puts per path).
const BATCH_PATHS = 2500

/** What the suite needs to know about a made store (its `meta.json`). */
export interface BigStoreMeta {
  readonly version: number
  readonly count: number
  readonly createdAt: string
  readonly seconds: number
  /** Total bytes of the NAR files. */
  readonly bytes: number
  /** Every 1000th hash part, to ask for. */
  readonly sampleHashParts: string[]
}

/** Where the store of `count` paths lives (`dataDir` is what narthex's config names). */
export function bigStoreDirs(benchDir: string, count = BIG_STORE_COUNT): { root: string; dataDir: string; meta: string } {
  const root = join(benchDir, '.data', `bigstore-v${BIG_STORE_VERSION}-${count}`)
  return { root, dataDir: join(root, 'data'), meta: join(root, 'meta.json') }
}

/** The meta of a complete store of `count` paths, or undefined. */
export async function readBigStore(benchDir: string, count = BIG_STORE_COUNT): Promise<BigStoreMeta | undefined> {
  const dirs = bigStoreDirs(benchDir, count)
  if (!existsSync(dirs.meta)) return undefined
  const meta = JSON.parse(await readFile(dirs.meta, 'utf8')) as BigStoreMeta
  return meta.version === BIG_STORE_VERSION && meta.count === count ? meta : undefined
}

/** Path `i` of the store: its hash part, NAR file name, NAR bytes and admitted records. */
function pathOf(i: number, key: ReturnType<typeof generateSecretKey>, now: number) {
  const hashPart = encodeNix32(createHash('sha256').update(`narthex-big-store-${i}`).digest().subarray(0, 20))
  const nar = writeNar({ type: 'regular', contents: `narthex big store path ${i}\n` })
  const narHash = sha256Of(nar)
  const fileName = `${encodeNix32(narHash.digest)}.nar`
  const info: NarInfo = signNarInfo(
    {
      storePath: parseStorePath(`/nix/store/${hashPart}-big-${i}`),
      url: `nar/${fileName}`,
      compression: 'none',
      fileHash: narHash,
      fileSize: nar.length,
      narHash,
      narSize: nar.length,
      references: [],
      sigs: [],
    },
    key,
  )
  const hash = formatNixHash(narHash)
  const narinfo: NarInfoRecord = {
    narinfo: formatNarInfo(info),
    sources: [{ upstream: UPSTREAM, url: `http://127.0.0.1:1/nar/${fileName}`, compression: 'none', fileHash: hash, fileSize: nar.length }],
    rule: 0,
    signers: [KEY_NAME],
    admittedAt: now,
    origin: UPSTREAM,
  }
  const file: NarFileRecord = { fileHash: hash, fileSize: nar.length, narHash: hash, narSize: nar.length, compression: 'none', storedAt: now }
  return { hashPart, fileName, nar, hash, narinfo, file }
}

/**
 * Makes the store of `count` paths (unless a complete one is there) and returns its meta.
 * @param log progress lines
 */
export async function makeBigStore(benchDir: string, count: number, log: (msg: string) => void): Promise<BigStoreMeta> {
  const have = await readBigStore(benchDir, count)
  if (have) return have
  const dirs = bigStoreDirs(benchDir, count)
  const started = performance.now()
  await rm(dirs.root, { recursive: true, force: true })
  for (const d of ['tmp', 'uploads']) mkdirSync(join(dirs.dataDir, d), { recursive: true })
  const shards = new Set<string>()
  const db = new Level<string, string>(join(dirs.dataDir, 'index'), { valueEncoding: 'utf8' })
  await db.open()
  const narinfos = db.sublevel<string, NarInfoRecord>('narinfo', { valueEncoding: 'json' })
  const nars = db.sublevel<string, NarFileRecord>('nar', { valueEncoding: 'json' })
  const first = db.sublevel<string, string>('first', { valueEncoding: 'utf8' })
  const byNar = db.sublevel<string, string>('bynar', { valueEncoding: 'utf8' })
  const key = generateSecretKey(KEY_NAME)
  const now = Date.now()
  const sampleHashParts: string[] = []
  let bytes = 0
  let pending: Promise<void> = Promise.resolve()
  try {
    for (let start = 0; start < count; start += BATCH_PATHS) {
      const ops: unknown[] = []
      for (let i = start; i < Math.min(count, start + BATCH_PATHS); i++) {
        const p = pathOf(i, key, now)
        // Synchronous writes: this process does nothing else meanwhile, and the index batch of the
        // previous slice is written by LevelDB's own thread at the same time.
        const shard = join(dirs.dataDir, 'nar', p.fileName.slice(0, 2))
        if (!shards.has(shard)) mkdirSync(shard, { recursive: true })
        shards.add(shard)
        writeFileSync(join(shard, p.fileName), p.nar)
        bytes += p.nar.length
        if (i % 1000 === 0) sampleHashParts.push(p.hashPart)
        ops.push(
          { type: 'put', sublevel: narinfos, key: p.hashPart, value: p.narinfo },
          { type: 'put', sublevel: nars, key: p.fileName, value: p.file },
          { type: 'put', sublevel: first, key: p.hashPart, value: p.hash },
          { type: 'put', sublevel: byNar, key: `${p.fileName}/${p.hashPart}`, value: '' },
        )
      }
      await pending
      pending = db.batch(ops as never)
      if ((start / BATCH_PATHS) % 40 === 0) log(`big store: ${start} of ${count} paths (${((performance.now() - started) / 1000).toFixed(0)} s)`)
    }
    await pending
  } finally {
    await db.close()
  }
  const meta: BigStoreMeta = {
    version: BIG_STORE_VERSION,
    count,
    createdAt: new Date().toISOString(),
    seconds: (performance.now() - started) / 1000,
    bytes,
    sampleHashParts,
  }
  await writeFile(dirs.meta, JSON.stringify(meta))
  log(`big store: ${count} paths, ${(bytes / 2 ** 20).toFixed(0)} MiB of NARs, made in ${meta.seconds.toFixed(0)} s`)
  return meta
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const i = process.argv.indexOf('--count')
  const count = i >= 0 ? Number(process.argv[i + 1]) : BIG_STORE_COUNT
  if (!Number.isInteger(count) || count < 1) throw new Error('--count takes a positive integer')
  const benchDir = dirname(dirname(fileURLToPath(import.meta.url)))
  await makeBigStore(benchDir, count, (m) => process.stderr.write(`[big-store ${new Date().toISOString().slice(11, 19)}] ${m}\n`))
}
