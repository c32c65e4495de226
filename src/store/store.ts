/**
 * The local store: a LevelDB index of admitted narinfos and NAR files, and the
 * NAR files themselves, content-addressed under `<dataDir>/nar/`.
 *
 * Crash safety rests on one ordering: a NAR is written to `<dataDir>/tmp/`,
 * fsynced, renamed into `nar/`, its directory fsynced, and only then indexed.
 * So the index never names a missing or partial file. Commits are grouped
 * (commit-queue.ts): the NARs verified while one flush runs are made durable
 * together by the next (their fsyncs in parallel, one fsync per directory, one
 * synced index batch), and so are the index writes of admissions. A clean close
 * leaves a marker, so the next open needs no scan; after a crash
 * (recovery.ts) temp files are removed at open, and NAR files no index entry
 * names, in the background. Anything else found under `nar/` (an NFS `.nfs…`
 * file, an editor's backup) is not narthex's: it is reported and left alone.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { Level } from 'level'
import { NarthexError } from '../errors.js'
import { narFileNameOf, narShardPath, parseNarFileName, parseNarInfo, type Compression } from '../protocol/index.js'
import type { AuditEvent } from './audit.js'
import { CommitQueue, flushNarCommits, type NarCommit } from './commit-queue.js'
import { emptyReport, removeTempFiles, repairStore, takeCleanMarker, writeCleanMarker, type RecoveryReport } from './recovery.js'

export type { RecoveryReport } from './recovery.js'

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

function ioError(what: string, err: unknown): NarthexError {
  return new NarthexError('STORE_IO', `${what}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
}

/** How {@link Store.open} repairs a store left by an unclean stop. */
export interface OpenOptions {
  /**
   * `wait` (the default): the repair is done when open resolves (tools, tests).
   * `background`: open resolves at once and the repair runs while the store is
   * used ({@link Store.repaired} settles when it is done).
   */
  readonly repair?: 'wait' | 'background'
}

type IndexOps = readonly object[]

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
  /** Bytes of all indexed NAR files (while a repair runs: those committed since it began, plus what it has counted at its end). */
  #totalBytes = 0
  /** Last-use times not yet written to the index. */
  readonly #touched = new Map<string, number>()
  /** Synced index writes, grouped. */
  readonly #indexQueue: CommitQueue<IndexOps>
  /** NAR commits (fsync, rename, directory fsync, index), grouped. */
  readonly #narQueue: CommitQueue<NarCommit>
  #repairing = false
  #closing = false
  /** Settles once the repair of an unclean stop is done (at once after a clean one). */
  repaired: Promise<RecoveryReport> = Promise.resolve(emptyReport(true))
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
    // Synced: an admission the client was answered with, or a NAR once committed, survives a power loss.
    this.#indexQueue = new CommitQueue<IndexOps>(async (groups) => {
      await this.#db.batch(groups.flat() as never, { sync: true })
      return groups.map(() => undefined)
    })
    const shards = new Set<string>()
    this.#narQueue = new CommitQueue<NarCommit>((items) =>
      flushNarCommits(items, { narPath: (name) => this.narPath(name), shards, index: (ready) => this.#indexNars(ready) }),
    )
  }

  /**
   * Opens (creating if needed) the store in `dataDir`. After a clean close
   * nothing is scanned; after an unclean stop, temp files are removed at once
   * and the index is compared with the NAR files (see recovery.ts), before open
   * resolves or in the background (`options.repair`).
   * @throws NarthexError STORE_IO when the directory or the index cannot be opened
   *   (another narthex holding the LevelDB lock, permissions, a full disk).
   */
  static async open(dataDir: string, options: OpenOptions = {}): Promise<{ store: Store; recovery: RecoveryReport }> {
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
    const marker = await takeCleanMarker(dataDir)
    // A new data directory has nothing to repair.
    const fresh = !marker && (await readdir(store.narDir)).length === 0 && (await store.#nars.keys({ limit: 1 }).all()).length === 0
    const recovery = emptyReport(marker !== undefined || fresh)
    await removeTempFiles(store.tmpDir, store.uploadsDir, recovery)
    if (marker || fresh) {
      store.#totalBytes = marker?.totalBytes ?? 0
      return { store, recovery }
    }
    store.#repairing = true
    store.repaired = store.#repair(recovery)
    if (options.repair !== 'background') await store.repaired
    return { store, recovery }
  }

  async #repair(report: RecoveryReport): Promise<RecoveryReport> {
    const nars = this.#nars
    try {
      const bytes = await repairStore(
        {
          narDir: this.narDir,
          indexed: () => {
            // Created now, so its snapshot is the index as of the open.
            const it = nars.iterator()
            return (async function* () {
              for await (const [name, rec] of it) yield [name, rec.fileSize] as const
            })()
          },
          sizeOf: async (name) => (await nars.get(name))?.fileSize,
          dropEntry: async (name) => {
            await nars.del(name)
            await this.#access.del(name)
          },
          narPath: (name) => this.narPath(name),
          exclusive: (task) => this.#narQueue.exclusive(task),
          stopped: () => this.#closing,
        },
        report,
      )
      this.#totalBytes += bytes
      return report
    } finally {
      this.#repairing = false
    }
  }

  /** Writes pending last-use times, waits for pending commits, closes the index and, when all is consistent, leaves the clean marker. */
  async close(): Promise<void> {
    this.#closing = true
    const repairDone = !this.#repairing
    await this.repaired.catch(() => undefined)
    await this.#narQueue.drain()
    await this.flushAccess().catch(() => undefined)
    await this.#indexQueue.drain()
    await this.#db.close()
    // An interrupted repair leaves no marker: the next open repairs again.
    if (!repairDone) return
    await writeCleanMarker(this.dataDir, this.#totalBytes)
  }

  /** Figures of the group commits: flushes run and items carried, for NARs and index writes. */
  get commitFigures(): { narFlushes: number; nars: number; indexFlushes: number; indexWrites: number } {
    return { narFlushes: this.#narQueue.flushes, nars: this.#narQueue.items, indexFlushes: this.#indexQueue.flushes, indexWrites: this.#indexQueue.items }
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
    // Until a repair has counted the stored bytes, the total is not known.
    if (this.#repairing || this.#totalBytes <= targetBytes) return { evicted, freedBytes }
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
      // Synced, in one batch with the admissions and commits written meanwhile.
      await this.#indexQueue.add(ops)
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
   * Makes a complete, verified temp file durable, moves it into the store and
   * indexes it; resolves once all of that is done. Commits that come while
   * another flush runs are made durable together by the next (see the module
   * comment). The file is fsynced here (`handle`, when given, is the open temp
   * file: it is synced and closed), and the rename and the directory fsync come
   * before the index write, so a crash leaves at worst an unindexed file, which
   * the next open removes.
   * @throws NarthexError STORE_IO; the temp file is removed then.
   */
  async commitNar(tempPath: string, fileName: string, record: NarFileRecord, handle?: FileHandle): Promise<void> {
    try {
      this.narPath(fileName)
    } catch (err) {
      await handle?.close().catch(() => undefined)
      throw err
    }
    try {
      await this.#narQueue.add({ tempPath, fileName, record, handle })
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

  /** Indexes NAR files just made durable and renamed in, in one synced batch. */
  async #indexNars(items: readonly NarCommit[]): Promise<void> {
    const previous = await this.#nars.getMany(items.map((c) => c.fileName))
    try {
      await this.#indexQueue.add(items.map((c) => ({ type: 'put', sublevel: this.#nars, key: c.fileName, value: c.record })))
    } catch (err) {
      // Renamed but not indexed: removed now rather than at the next repair (unless it replaced an indexed file).
      for (const [k, c] of items.entries()) if (!previous[k]) await rm(this.narPath(c.fileName), { force: true }).catch(() => undefined)
      throw err
    }
    items.forEach((c, k) => (this.#totalBytes += c.record.fileSize - (previous[k]?.fileSize ?? 0)))
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
