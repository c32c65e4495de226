/**
 * Independent checks of a narthex data directory, for the reliability tests: every NAR file is
 * re-hashed (its compressed bytes against the index's FileHash, its bytes decompressed by the
 * system's own `xz`/`zstd`/`bzip2` against the NarHash its name carries), and the LevelDB index
 * is compared with the files on disk. The index is opened directly with `level` and only read:
 * unlike `Store.open`, nothing is repaired, so what a crash left behind is seen as it is.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { access, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Level } from 'level'
import { encodeNix32, narFileNameOf, parseNarInfo } from '../../src/protocol/index.js'

const DECODERS: Record<string, [string, string[]] | undefined> = {
  '.nar': undefined,
  '.nar.xz': ['xz', ['-dc']],
  '.nar.zst': ['zstd', ['-dcq']],
  '.nar.bz2': ['bzip2', ['-dc']],
}

/** What hashing one NAR file found. */
export interface HashedNar {
  /** `sha256:<nix32>` of the file as stored (FileHash). */
  readonly fileHash: string
  readonly fileSize: number
  /** `sha256:<nix32>` of the decompressed NAR (NarHash), or undefined when it does not decompress. */
  readonly narHash: string | undefined
  readonly narSize: number
}

// Stored NAR files are immutable and content-addressed: hash each version of a file once.
const hashed = new Map<string, HashedNar>()

/** Hashes a NAR file: its bytes, and its bytes decompressed by the system's tool for its extension. */
export async function hashNarFile(file: string): Promise<HashedNar> {
  const st = await stat(file)
  const memo = `${file}:${st.ino}:${st.size}:${st.mtimeMs}`
  const known = hashed.get(memo)
  if (known) return known
  const ext = /\.nar(\.[a-z0-9]+)?$/.exec(file)?.[0] ?? ''
  if (!(ext in DECODERS)) throw new Error(`no decoder for ${file}`)
  const decoder = DECODERS[ext]
  const fileSha = createHash('sha256')
  let fileSize = 0
  const narSha = createHash('sha256')
  let narSize = 0
  let narOk = true
  if (!decoder) {
    for await (const chunk of createReadStream(file)) {
      fileSha.update(chunk as Buffer)
      narSha.update(chunk as Buffer)
      fileSize += (chunk as Buffer).length
    }
    narSize = fileSize
  } else {
    const child = spawn(decoder[0], decoder[1], { stdio: ['pipe', 'pipe', 'ignore'] })
    const exit = new Promise<number | null>((resolve) => child.once('close', resolve))
    const reading = (async () => {
      for await (const chunk of child.stdout) {
        narSha.update(chunk as Buffer)
        narSize += (chunk as Buffer).length
      }
    })()
    child.stdin.on('error', () => undefined)
    await pipeline(
      createReadStream(file),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          fileSha.update(chunk)
          fileSize += chunk.length
          yield chunk
        }
      },
      child.stdin,
    ).catch(() => {
      narOk = false
    })
    await reading
    if ((await exit) !== 0) narOk = false
  }
  const result: HashedNar = {
    fileHash: `sha256:${encodeNix32(fileSha.digest())}`,
    fileSize,
    narHash: narOk ? `sha256:${encodeNix32(narSha.digest())}` : undefined,
    narSize,
  }
  hashed.set(memo, result)
  return result
}

/**
 * Hashes the bytes of a NAR file a client received, named `fileName` (its extension picks the
 * decoder), as {@link hashNarFile} hashes a stored one.
 */
export async function hashNarBytes(bytes: Buffer, fileName: string): Promise<HashedNar> {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-received-'))
  try {
    const file = join(dir, fileName)
    await writeFile(file, bytes)
    return await hashNarFile(file)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** The NarHash (`sha256:<nix32>`) a content-addressed NAR file name stands for. */
export function narHashOfName(name: string): string {
  return `sha256:${name.slice(0, 52)}`
}

/** Every NAR file under `<dataDir>/nar/`, as `[name, absolute path]`. */
export async function listNarFiles(dataDir: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = []
  const narDir = join(dataDir, 'nar')
  for (const shard of (await readdir(narDir).catch(() => [] as string[])).sort()) {
    for (const name of (await readdir(join(narDir, shard)).catch(() => [] as string[])).sort()) out.push([name, join(narDir, shard, name)])
  }
  return out
}

/** Files in `<dataDir>/tmp/`. */
export async function listTempFiles(dataDir: string): Promise<string[]> {
  return readdir(join(dataDir, 'tmp')).catch(() => [])
}

/**
 * Re-hashes every file under `nar/` against the NarHash its name carries. Safe while narthex
 * runs: files appear there only by an atomic rename after verification.
 * @returns the number checked and the names of files whose bytes do not match their name.
 */
export async function checkNarFilesByName(dataDir: string): Promise<{ checked: number; corrupt: string[] }> {
  const corrupt: string[] = []
  const files = await listNarFiles(dataDir)
  for (const [name, file] of files) {
    const h = await hashNarFile(file)
    if (h.narHash !== narHashOfName(name)) corrupt.push(name)
  }
  return { checked: files.length, corrupt }
}

/** What {@link checkStore} found. */
export interface StoreReport {
  /** NAR file records in the index. */
  readonly narRecords: number
  /** Admitted narinfo records in the index. */
  readonly narinfos: number
  /** NAR files on disk. */
  readonly narFiles: number
  /** Index entries whose file exists but whose bytes or sizes disagree with the record or the name. */
  readonly corrupt: string[]
  /** Index entries naming a file that is missing. */
  readonly dangling: string[]
  /** Files on disk that no index entry names. */
  readonly orphans: string[]
  /** Files left in `tmp/`. */
  readonly tempFiles: string[]
  /** Admitted narinfos that do not parse, or are filed under another hash part or without a NAR link. */
  readonly badNarinfos: string[]
  /** Hash parts of the admitted narinfos. */
  readonly narinfoKeys: Set<string>
  /** Names of the indexed NAR files. */
  readonly narNames: Set<string>
  /** True when the clean marker a clean close leaves is there. */
  readonly clean: boolean
}

interface NarRecord {
  fileHash: string
  fileSize: number
  narHash: string
  narSize: number
  compression: string
}

/**
 * Compares the index of a STOPPED narthex's data directory with its files, re-hashing every
 * indexed NAR. Nothing is modified.
 */
export async function checkStore(dataDir: string): Promise<StoreReport> {
  const db = new Level<string, string>(join(dataDir, 'index'), { valueEncoding: 'utf8' })
  await db.open()
  try {
    const nars = db.sublevel<string, NarRecord>('nar', { valueEncoding: 'json' })
    const narinfos = db.sublevel<string, { narinfo: string }>('narinfo', { valueEncoding: 'json' })
    const byNar = db.sublevel<string, string>('bynar', { valueEncoding: 'utf8' })
    const onDisk = new Map(await listNarFiles(dataDir))
    const corrupt: string[] = []
    const dangling: string[] = []
    const narNames = new Set<string>()
    let narRecords = 0
    for await (const [name, rec] of nars.iterator()) {
      narRecords++
      narNames.add(name)
      const file = onDisk.get(name)
      onDisk.delete(name)
      if (!file) {
        dangling.push(name)
        continue
      }
      const h = await hashNarFile(file)
      const ok =
        h.fileSize === rec.fileSize && h.fileHash === rec.fileHash && h.narHash === rec.narHash && h.narSize === rec.narSize && rec.narHash === narHashOfName(name)
      if (!ok) corrupt.push(name)
    }
    const links = new Set<string>()
    for await (const key of byNar.keys()) links.add(key)
    const badNarinfos: string[] = []
    const narinfoKeys = new Set<string>()
    let count = 0
    for await (const [hashPart, rec] of narinfos.iterator()) {
      count++
      narinfoKeys.add(hashPart)
      try {
        const info = parseNarInfo(rec.narinfo)
        const fileName = narFileNameOf(info)
        if (info.storePath.hashPart !== hashPart || !links.has(`${fileName}/${hashPart}`)) badNarinfos.push(hashPart)
      } catch {
        badNarinfos.push(hashPart)
      }
    }
    return {
      narRecords,
      narinfos: count,
      narFiles: narRecords - dangling.length + onDisk.size,
      corrupt,
      dangling,
      orphans: [...onDisk.keys()],
      tempFiles: await listTempFiles(dataDir),
      badNarinfos,
      narinfoKeys,
      narNames,
      clean: await access(join(dataDir, 'clean')).then(() => true, () => false),
    }
  } finally {
    await db.close()
  }
}
