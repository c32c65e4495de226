/**
 * The local store: a LevelDB index of admitted narinfos and NAR files, and the
 * NAR files themselves, content-addressed under `<dataDir>/nar/`.
 *
 * Crash safety rests on one ordering: a NAR is written to `<dataDir>/tmp/`,
 * fsynced, renamed into `nar/`, its directory fsynced, and only then indexed.
 * So the index never names a missing or partial file. {@link Store.open} removes
 * what a crash can leave behind: temp files, and NAR files no index entry names.
 * Anything else found under `nar/` (an NFS `.nfs…` file, an editor's backup) is
 * not narthex's: it is reported and left alone.
 */
import { randomBytes } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Level } from 'level'
import { NarthexError } from '../errors.js'
import { narFileNameOf, narShardPath, parseNarFileName, parseNarInfo, type Compression } from '../protocol/index.js'
import type { AuditEvent } from './audit.js'

/** Where an admitted path's NAR can be fetched from, in priority order. */
export interface SourceRecord {
  readonly upstream: string
  /** Absolute URL of the compressed NAR at that upstream. */
  readonly url: string
  readonly compression: Compression
  readonly fileHash?: string
  readonly fileSize?: number
}

/** An admitted narinfo as the index keeps it. */
export interface NarInfoRecord {
  /** The admitted narinfo in Nix's format (upstream URL; verified trusted signatures only). */
  readonly narinfo: string
  readonly sources: readonly SourceRecord[]
  /** Index of the rule that admitted it, and the key names that counted. */
  readonly rule: number
  readonly signers: readonly string[]
  readonly admittedAt: number
  /** Who supplied it: an upstream name, `push`, or `import`. */
  readonly origin: string
}

/** An admitted realisation (`realisations/<id>.doi`) as the index keeps it. */
export interface RealisationRecord {
  /** The realisation in Nix's JSON, with the verified trusted signatures only. */
  readonly realisation: string
  /** An upstream name, or `push`. */
  readonly origin: string
  /** Index of the rule that admitted it (-1 for a push), and the key names that counted. */
  readonly rule: number
  readonly signers: readonly string[]
  readonly admittedAt: number
}

/** A stored NAR file. Its name is `<NarHash nix32>.nar<ext>`. */
export interface NarFileRecord {
  readonly fileHash: string
  readonly fileSize: number
  readonly narHash: string
  readonly narSize: number
  readonly compression: Compression
  readonly storedAt: number
}

/** What {@link Store.open} found and repaired. */
export interface RecoveryReport {
  tempFilesRemoved: number
  orphanFilesRemoved: number
  danglingEntriesRemoved: number
  /** Paths under `nar/` (relative to it) that are not NAR files of this store; left as they are. */
  strayFiles: string[]
}

const UPLOAD_TTL_MS = 24 * 3600 * 1000

function ioError(what: string, err: unknown): NarthexError {
  return new NarthexError('STORE_IO', `${what}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
}

/** The store of one data directory. Open with {@link Store.open}; one process owns it at a time. */
export class Store {
  readonly #db: Level<string, string>
  readonly #narinfos
  readonly #nars
  readonly #first
  readonly #byNar
  readonly #access
  readonly #pins
  readonly #realisations
  readonly #listings
  readonly #auditOutbox
  /** Bytes of all indexed NAR files. */
  #totalBytes = 0
  /** Last-use times not yet written to the index. */
  readonly #touched = new Map<string, number>()
  readonly narDir: string
  readonly tmpDir: string
  /** NAR files pushed by `nix copy --to`, waiting for their narinfo. */
  readonly uploadsDir: string

  private constructor(
    readonly dataDir: string,
    db: Level<string, string>,
  ) {
    this.#db = db
    this.#narinfos = db.sublevel<string, NarInfoRecord>('narinfo', { valueEncoding: 'json' })
    this.#nars = db.sublevel<string, NarFileRecord>('nar', { valueEncoding: 'json' })
    this.#first = db.sublevel<string, string>('first', { valueEncoding: 'utf8' })
    this.#byNar = db.sublevel<string, string>('bynar', { valueEncoding: 'utf8' })
    this.#access = db.sublevel<string, number>('access', { valueEncoding: 'json' })
    this.#pins = db.sublevel<string, number>('pin', { valueEncoding: 'json' })
    this.#realisations = db.sublevel<string, RealisationRecord>('realisation', { valueEncoding: 'json' })
    this.#listings = db.sublevel<string, string>('listing', { valueEncoding: 'utf8' })
    this.#auditOutbox = db.sublevel<string, AuditEvent>('auditOutbox', { valueEncoding: 'json' })
    this.narDir = join(dataDir, 'nar')
    this.tmpDir = join(dataDir, 'tmp')
    this.uploadsDir = join(dataDir, 'uploads')
  }

  /**
   * Opens (creating if needed) the store in `dataDir` and repairs what a crash
   * may have left: temp files, unindexed NAR files, index entries whose file is gone.
   * @throws NarthexError STORE_IO when the directory or the index cannot be opened
   *   (another narthex holding the LevelDB lock, permissions, a full disk).
   */
  static async open(dataDir: string): Promise<{ store: Store; recovery: RecoveryReport }> {
    try {
      await mkdir(join(dataDir, 'nar'), { recursive: true })
      await mkdir(join(dataDir, 'tmp'), { recursive: true })
      await mkdir(join(dataDir, 'uploads'), { recursive: true })
    } catch (err) {
      throw ioError(`cannot create the data directory ${dataDir}`, err)
    }
    const db = new Level<string, string>(join(dataDir, 'index'), { valueEncoding: 'utf8' })
    try {
      await db.open()
    } catch (err) {
      const locked = String((err as { cause?: unknown }).cause ?? err).includes('lock')
      throw new NarthexError(
        'STORE_IO',
        locked
          ? `the index in ${dataDir} is locked: is another narthex running on this data directory?`
          : `cannot open the index in ${dataDir}: ${(err as Error).message}`,
        { cause: err },
      )
    }
    const store = new Store(dataDir, db)
    const recovery = await store.#recover()
    return { store, recovery }
  }

  async #recover(): Promise<RecoveryReport> {
    const report: RecoveryReport = { tempFilesRemoved: 0, orphanFilesRemoved: 0, danglingEntriesRemoved: 0, strayFiles: [] }
    for (const name of await readdir(this.tmpDir)) {
      await rm(join(this.tmpDir, name), { force: true, recursive: true })
      report.tempFilesRemoved++
    }
    // A pushed NAR whose narinfo never came within a day is abandoned.
    for (const name of await readdir(this.uploadsDir)) {
      const st = await stat(join(this.uploadsDir, name)).catch(() => undefined)
      if (st && Date.now() - st.mtimeMs > UPLOAD_TTL_MS) {
        await rm(join(this.uploadsDir, name), { force: true })
        report.tempFilesRemoved++
      }
    }
    const onDisk = new Set<string>()
    for (const shard of await readdir(this.narDir)) {
      const names = await readdir(join(this.narDir, shard)).catch(() => undefined)
      if (names === undefined) {
        report.strayFiles.push(shard)
        continue
      }
      for (const name of names) {
        // Only a NAR file name in its own shard is ours to judge; anything else
        // (another client's lock or NFS file) is not deleted, and never fed to narPath.
        const where = `${shard}/${name}`
        if (parseNarFileName(name) && narShardPath(name) === where) onDisk.add(name)
        else report.strayFiles.push(where)
      }
    }
    const dangling: string[] = []
    for await (const [name, rec] of this.#nars.iterator()) {
      if (!onDisk.has(name)) {
        dangling.push(name)
        continue
      }
      onDisk.delete(name)
      // A file whose size differs from its record was not written by a completed commit.
      const st = await stat(this.narPath(name)).catch(() => undefined)
      if (!st || st.size !== rec.fileSize) dangling.push(name)
      else this.#totalBytes += rec.fileSize
    }
    for (const name of dangling) {
      await this.#nars.del(name)
      await rm(this.narPath(name), { force: true })
      report.danglingEntriesRemoved++
    }
    for (const name of onDisk) {
      await rm(this.narPath(name), { force: true })
      report.orphanFilesRemoved++
    }
    return report
  }

  /** Writes pending last-use times and closes the index. */
  async close(): Promise<void> {
    await this.flushAccess().catch(() => undefined)
    await this.#db.close()
  }

  /** Bytes of all stored NAR files. */
  get totalBytes(): number {
    return this.#totalBytes
  }

  /** Records that a stored NAR was used now (for least-recently-used eviction). */
  touch(fileName: string, at = Date.now()): void {
    this.#touched.set(fileName, at)
  }

  /** Writes the last-use times recorded since the last flush. */
  async flushAccess(): Promise<void> {
    if (this.#touched.size === 0) return
    const ops = [...this.#touched].map(([key, value]) => ({ type: 'put' as const, key, value }))
    this.#touched.clear()
    await this.#access.batch(ops)
  }

  /**
   * Counts admitted paths, NAR files and pins by walking the index's keys (no
   * values are read): for the status page and metrics, not for a hot path.
   */
  async countEntries(): Promise<{ paths: number; narFiles: number; pinned: number }> {
    const count = async (keys: AsyncIterable<string>) => {
      let n = 0
      for await (const _ of keys) n++
      return n
    }
    return { paths: await count(this.#narinfos.keys()), narFiles: await count(this.#nars.keys()), pinned: await count(this.#pins.keys()) }
  }

  /** Pins a path: its NAR is never evicted. */
  async pin(hashPart: string): Promise<void> {
    await this.#pins.put(hashPart, Date.now())
  }

  /** Every pinned hash part. */
  async *pinned(): AsyncGenerator<string> {
    for await (const key of this.#pins.keys()) yield key
  }

  /**
   * Evicts least-recently-used NAR files until the store holds at most
   * `targetBytes`. A NAR is kept when any path using it is pinned or has no
   * upstream to fetch it again from (pushed and imported paths). Narinfo records
   * stay: an evicted NAR is fetched again on demand, and the first NarHash of
   * every path stays remembered.
   * @returns the files evicted and the bytes freed.
   */
  async collectGarbage(targetBytes: number): Promise<{ evicted: string[]; freedBytes: number }> {
    const evicted: string[] = []
    let freedBytes = 0
    if (this.#totalBytes <= targetBytes) return { evicted, freedBytes }
    await this.flushAccess()
    const candidates: Array<{ name: string; size: number; used: number }> = []
    for await (const [name, rec] of this.#nars.iterator()) {
      candidates.push({ name, size: rec.fileSize, used: (await this.#access.get(name)) ?? rec.storedAt })
    }
    candidates.sort((a, b) => a.used - b.used)
    for (const c of candidates) {
      if (this.#totalBytes <= targetBytes) break
      if (await this.#isKept(c.name)) continue
      await this.removeNar(c.name)
      evicted.push(c.name)
      freedBytes += c.size
    }
    return { evicted, freedBytes }
  }

  async #isKept(fileName: string): Promise<boolean> {
    for (const hashPart of await this.narInfosForFile(fileName)) {
      if ((await this.#pins.get(hashPart)) !== undefined) return true
      const rec = await this.#narinfos.get(hashPart)
      if (rec && rec.sources.length === 0) return true
    }
    return false
  }

  /** The admitted narinfo record of a hash part, or undefined. */
  async getNarInfo(hashPart: string): Promise<NarInfoRecord | undefined> {
    return this.#narinfos.get(hashPart)
  }

  /** The NarHash first admitted for a hash part (kept after eviction), or undefined. */
  async getFirstNarHash(hashPart: string): Promise<string | undefined> {
    return this.#first.get(hashPart)
  }

  /** Hash parts of the admitted narinfos whose NAR is `fileName`. */
  async narInfosForFile(fileName: string): Promise<string[]> {
    const out: string[] = []
    for await (const key of this.#byNar.keys({ gt: `${fileName}/`, lt: `${fileName}/~` })) {
      out.push(key.slice(fileName.length + 1))
    }
    return out
  }

  /**
   * Records an admitted narinfo, the NAR file it points at, and (the first time)
   * its NarHash, in one atomic batch. With `auditEvent` (which must carry an
   * `id`), the event goes into the audit outbox in the same batch, so the
   * admission and its audit entry-to-be are durable together (`audit-outbox.ts`).
   */
  async putNarInfo(hashPart: string, fileName: string, narHash: string, record: NarInfoRecord, auditEvent?: AuditEvent): Promise<void> {
    if (auditEvent && !auditEvent.id) throw new TypeError('an audit event for the outbox needs an id')
    const first = await this.#first.get(hashPart)
    const ops = [
      ...(auditEvent ? [{ type: 'put' as const, sublevel: this.#auditOutbox, key: auditEvent.id!, value: auditEvent }] : []),
      { type: 'put' as const, sublevel: this.#narinfos, key: hashPart, value: record },
      { type: 'put' as const, sublevel: this.#byNar, key: `${fileName}/${hashPart}`, value: '' },
      ...(first === undefined ? [{ type: 'put' as const, sublevel: this.#first, key: hashPart, value: narHash }] : []),
    ]
    try {
      // Synced: an admission the client was answered with survives a power loss.
      await this.#db.batch(ops as never, { sync: true })
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /** The audit events in the outbox (written by {@link Store.putNarInfo}, not yet cleared), oldest first. */
  async *auditOutbox(): AsyncGenerator<AuditEvent> {
    for await (const event of this.#auditOutbox.values()) yield event
  }

  /**
   * Removes audit events from the outbox once the audit log holds them. Not
   * synced: an event whose removal a crash undoes is in the log already, and
   * the replay at start recognises it by its id.
   */
  async clearAuditOutbox(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    try {
      await this.#auditOutbox.batch(ids.map((key) => ({ type: 'del' as const, key })))
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /** Every admitted hash part with its record, in key order. */
  async *narInfos(): AsyncGenerator<[string, NarInfoRecord]> {
    for await (const entry of this.#narinfos.iterator()) yield entry
  }

  /** The record of a stored NAR file, or undefined. */
  async getNarFile(fileName: string): Promise<NarFileRecord | undefined> {
    return this.#nars.get(fileName)
  }

  /** Every stored NAR file with its record. */
  async *narFiles(): AsyncGenerator<[string, NarFileRecord]> {
    for await (const entry of this.#nars.iterator()) yield entry
  }

  /**
   * Absolute path of a NAR file in the store. Only names of the form
   * `<nix32>.nar<ext>` are accepted, so no request can reach outside `nar/`.
   * @throws NarthexError BAD_REQUEST for any other name.
   */
  narPath(fileName: string): string {
    if (!parseNarFileName(fileName)) {
      throw new NarthexError('BAD_REQUEST', `not a NAR file name: ${JSON.stringify(fileName)}`)
    }
    return join(this.narDir, narShardPath(fileName))
  }

  /**
   * Where a pushed NAR file waits for its narinfo: `uploads/<name>`, name as
   * `nix copy` sends it (`<nix32 FileHash>.nar<ext>`).
   * @throws NarthexError BAD_REQUEST for any other name.
   */
  uploadPath(fileName: string): string {
    if (!parseNarFileName(fileName)) {
      throw new NarthexError('BAD_REQUEST', `not a NAR file name: ${JSON.stringify(fileName)}`)
    }
    return join(this.uploadsDir, fileName)
  }

  /** A fresh temp file path under `tmp/` (removed at the next start if left behind). */
  tempPath(label: string): string {
    return join(this.tmpDir, `${randomBytes(8).toString('hex')}-${label.replace(/[^A-Za-z0-9.]/g, '_').slice(0, 80)}.part`)
  }

  /**
   * Moves a complete, already fsynced temp file into the store and indexes it.
   * The rename and the directory fsync come before the index write, so a crash
   * leaves at worst an unindexed file, which the next open removes.
   */
  async commitNar(tempPath: string, fileName: string, record: NarFileRecord): Promise<void> {
    const dest = this.narPath(fileName)
    const dir = dirname(dest)
    try {
      await mkdir(dir, { recursive: true })
      await rename(tempPath, dest)
      const dh = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
      try {
        await dh.sync()
      } finally {
        await dh.close()
      }
      const previous = await this.#nars.get(fileName)
      await this.#db.batch([{ type: 'put', sublevel: this.#nars, key: fileName, value: record }] as never, { sync: true })
      this.#totalBytes += record.fileSize - (previous?.fileSize ?? 0)
    } catch (err) {
      await unlink(tempPath).catch(() => undefined)
      throw ioError(`cannot store ${fileName}`, err)
    }
  }

  /** The admitted realisation of a derivation output id, or undefined. */
  async getRealisation(id: string): Promise<RealisationRecord | undefined> {
    return this.#realisations.get(id)
  }

  /** Records an admitted realisation (synced, as admissions are). */
  async putRealisation(id: string, record: RealisationRecord): Promise<void> {
    try {
      await this.#db.batch([{ type: 'put', sublevel: this.#realisations, key: id, value: record }] as never, { sync: true })
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /** The listing kept for a NAR (keyed by its NarHash), or undefined. */
  async getListing(narHash: string): Promise<string | undefined> {
    return this.#listings.get(narHash)
  }

  /** Keeps a NAR's listing; it depends on the NAR's bytes only, so it never goes stale. */
  async putListing(narHash: string, listing: string): Promise<void> {
    await this.#listings.put(narHash, listing)
  }

  /**
   * Removes a NAR file and its index entry (index first, so it never names a
   * missing file). With `moveTo`, the file is moved there instead of deleted.
   */
  async removeNar(fileName: string, moveTo?: string): Promise<void> {
    const record = await this.#nars.get(fileName)
    await this.#nars.del(fileName)
    await this.#access.del(fileName)
    this.#totalBytes -= record?.fileSize ?? 0
    if (moveTo) await rename(this.narPath(fileName), moveTo).catch(() => rm(this.narPath(fileName), { force: true }))
    else await rm(this.narPath(fileName), { force: true })
  }

  /**
   * Drops the admitted narinfo of a hash part, so it is resolved afresh on the
   * next request; with `releasePin`, its first-seen NarHash too (`narthex
   * forget`), else that stays and a new admission must offer the same NarHash.
   * The NAR file stays; with no narinfo naming it, it is evicted like any other.
   * One synced batch.
   * @returns the dropped record and the released NarHash, either undefined when there was none.
   */
  async dropNarInfo(hashPart: string, options: { releasePin?: boolean } = {}): Promise<{ record?: NarInfoRecord; firstNarHash?: string }> {
    const record = await this.#narinfos.get(hashPart)
    const firstNarHash = options.releasePin ? await this.#first.get(hashPart) : undefined
    let fileName: string | undefined
    try {
      fileName = record ? narFileNameOf(parseNarInfo(record.narinfo)) : undefined
    } catch {
      fileName = undefined
    }
    const ops = [
      ...(record ? [{ type: 'del' as const, sublevel: this.#narinfos, key: hashPart }] : []),
      ...(fileName ? [{ type: 'del' as const, sublevel: this.#byNar, key: `${fileName}/${hashPart}` }] : []),
      ...(firstNarHash !== undefined ? [{ type: 'del' as const, sublevel: this.#first, key: hashPart }] : []),
    ]
    if (ops.length === 0) return {}
    try {
      await this.#db.batch(ops as never, { sync: true })
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
    return { ...(record ? { record } : {}), ...(firstNarHash !== undefined ? { firstNarHash } : {}) }
  }
}
