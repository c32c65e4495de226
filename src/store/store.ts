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
import { readdir, rename, rm, unlink, type FileHandle } from 'node:fs/promises'
import type { Level } from 'level'
import { narFileNameOf, parseNarInfo } from '../protocol/index.js'
import type { AuditEvent } from './audit.js'
import { CommitQueue, flushNarCommits, type NarCommit } from './commit-queue.js'
import { collectGarbage } from './gc.js'
import type { NarFileRecord, NarInfoRecord, RealisationRecord } from './records.js'
import { StorePaths } from './store-paths.js'
import { countKeys, ioError, openIndexDb, openSublevels, type PendingUpload, type Sublevels } from './store-index.js'
import { emptyReport, indexRepairHooks, removeTempFiles, repairStore, takeCleanMarker, writeCleanMarker, type RecoveryReport } from './recovery.js'

export type { RecoveryReport } from './recovery.js'

export type { NarFileRecord, NarInfoRecord, RealisationRecord, SourceRecord } from './records.js'
export type { PendingUpload } from './store-index.js'

/** How {@link Store.open} repairs a store left by an unclean stop. */
export interface OpenOptions {
  /**
   * `wait` (the default): the repair is done when open resolves (tools, tests).
   * `background`: open resolves at once and the repair runs while the store is
   * used ({@link Store.repaired} settles when it is done).
   */
  readonly repair?: 'wait' | 'background'
  /**
   * Every NAR committed is to be uploaded to the bucket: its commit records
   * that in the same synced batch ({@link Store.pendingUploads}), and it is
   * not evicted before {@link Store.clearUpload}.
   */
  readonly uploadToBucket?: boolean
}

type IndexOps = readonly object[]

/** The store of one data directory. Open with {@link Store.open}; one process owns it at a time. */
export class Store extends StorePaths {
  readonly #db: Level<string, string>
  /** The index's sublevels. */
  readonly #ix: Sublevels
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
  readonly #uploads: boolean
  readonly #committedListeners: Array<(fileNames: readonly string[]) => void> = []
  /** Settles once the repair of an unclean stop is done (at once after a clean one). */
  repaired: Promise<RecoveryReport> = Promise.resolve(emptyReport(true))

  private constructor(dataDir: string, db: Level<string, string>, uploads: boolean) {
    super(dataDir)
    this.#db = db
    this.#uploads = uploads
    this.#ix = openSublevels(db)
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
    const db = await openIndexDb(dataDir)
    const store = new Store(dataDir, db, options.uploadToBucket ?? false)
    const marker = await takeCleanMarker(dataDir)
    // A new data directory has nothing to repair.
    const fresh = !marker && (await readdir(store.narDir)).length === 0 && (await store.#ix.nars.keys({ limit: 1 }).all()).length === 0
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
    try {
      const hooks = indexRepairHooks(this.#ix, {
        narDir: this.narDir,
        narPath: (name) => this.narPath(name),
        exclusive: (task) => this.#narQueue.exclusive(task),
        stopped: () => this.#closing,
      })
      const bytes = await repairStore(hooks, report)
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
    await this.#ix.access.batch(ops)
  }

  /**
   * Counts admitted paths, NAR files and pins by walking the index's keys (no
   * values are read): for the status page and metrics, not for a hot path.
   */
  async countEntries(): Promise<{ paths: number; narFiles: number; pinned: number }> {
    return { paths: await countKeys(this.#ix.narinfos), narFiles: await countKeys(this.#ix.nars), pinned: await countKeys(this.#ix.pins) }
  }

  /** Pins a path: its NAR is never evicted. */
  async pin(hashPart: string): Promise<void> {
    await this.#ix.pins.put(hashPart, Date.now())
  }

  /** Every pinned hash part. */
  async *pinned(): AsyncGenerator<string> {
    for await (const key of this.#ix.pins.keys()) yield key
  }

  /**
   * Evicts least-recently-used NAR files until the store holds at most
   * `targetBytes` (see gc.ts for what is kept). Narinfo records
   * stay: an evicted NAR is fetched again on demand, and the first NarHash of
   * every path stays remembered.
   * @returns the files evicted and the bytes freed.
   */
  async collectGarbage(targetBytes: number): Promise<{ evicted: string[]; freedBytes: number }> {
    // Until a repair has counted the stored bytes, the total is not known.
    if (this.#repairing || this.#totalBytes <= targetBytes) return { evicted: [], freedBytes: 0 }
    const ctx = { ix: this.#ix, totalBytes: () => this.#totalBytes, bucketBacked: this.#uploads }
    return collectGarbage({ ...ctx, flushAccess: () => this.flushAccess(), removeNar: (n) => this.removeNar(n), narInfosForFile: (n) => this.narInfosForFile(n) }, targetBytes)
  }

  /** The admitted narinfo record of a hash part, or undefined. */
  async getNarInfo(hashPart: string): Promise<NarInfoRecord | undefined> {
    return this.#ix.narinfos.get(hashPart)
  }

  /** The NarHash first admitted for a hash part (kept after eviction), or undefined. */
  async getFirstNarHash(hashPart: string): Promise<string | undefined> {
    return this.#ix.first.get(hashPart)
  }

  /** Hash parts of the admitted narinfos whose NAR is `fileName`. */
  async narInfosForFile(fileName: string): Promise<string[]> {
    const out: string[] = []
    for await (const key of this.#ix.byNar.keys({ gt: `${fileName}/`, lt: `${fileName}/~` })) {
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
    const first = await this.#ix.first.get(hashPart)
    const ops = [
      ...(auditEvent ? [{ type: 'put' as const, sublevel: this.#ix.auditOutbox, key: auditEvent.id!, value: auditEvent }] : []),
      { type: 'put' as const, sublevel: this.#ix.narinfos, key: hashPart, value: record },
      { type: 'put' as const, sublevel: this.#ix.byNar, key: `${fileName}/${hashPart}`, value: '' },
      ...(first === undefined ? [{ type: 'put' as const, sublevel: this.#ix.first, key: hashPart, value: narHash }] : []),
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
    for await (const event of this.#ix.auditOutbox.values()) yield event
  }

  /**
   * Removes audit events from the outbox once the audit log holds them. Not
   * synced: an event whose removal a crash undoes is in the log already, and
   * the replay at start recognises it by its id.
   */
  async clearAuditOutbox(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return
    try {
      await this.#ix.auditOutbox.batch(ids.map((key) => ({ type: 'del' as const, key })))
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /** Every admitted hash part with its record, in key order. */
  async *narInfos(): AsyncGenerator<[string, NarInfoRecord]> {
    for await (const entry of this.#ix.narinfos.iterator()) yield entry
  }

  /** The record of a stored NAR file, or undefined. */
  async getNarFile(fileName: string): Promise<NarFileRecord | undefined> {
    return this.#ix.nars.get(fileName)
  }

  /** Every stored NAR file with its record. */
  async *narFiles(): AsyncGenerator<[string, NarFileRecord]> {
    for await (const entry of this.#ix.nars.iterator()) yield entry
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
    return this.#ix.realisations.get(id)
  }

  /** Records an admitted realisation (synced, as admissions are). */
  async putRealisation(id: string, record: RealisationRecord): Promise<void> {
    try {
      await this.#db.batch([{ type: 'put', sublevel: this.#ix.realisations, key: id, value: record }] as never, { sync: true })
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /** The listing kept for a NAR (keyed by its NarHash), or undefined. */
  async getListing(narHash: string): Promise<string | undefined> {
    return this.#ix.listings.get(narHash)
  }

  /** Keeps a NAR's listing; it depends on the NAR's bytes only, so it never goes stale. */
  async putListing(narHash: string, listing: string): Promise<void> {
    await this.#ix.listings.put(narHash, listing)
  }

  /** Indexes NAR files just made durable and renamed in, in one synced batch. */
  async #indexNars(items: readonly NarCommit[]): Promise<void> {
    const previous = await this.#ix.nars.getMany(items.map((c) => c.fileName))
    try {
      const uploads = this.#uploads ? items.map((c) => ({ type: 'put', sublevel: this.#ix.uploads, key: c.fileName, value: { fileSize: c.record.fileSize, queuedAt: Date.now() } })) : []
      await this.#indexQueue.add([...items.map((c) => ({ type: 'put', sublevel: this.#ix.nars, key: c.fileName, value: c.record })), ...uploads])
    } catch (err) {
      // Renamed but not indexed: removed now rather than at the next repair (unless it replaced an indexed file).
      for (const [k, c] of items.entries()) if (!previous[k]) await rm(this.narPath(c.fileName), { force: true }).catch(() => undefined)
      throw err
    }
    items.forEach((c, k) => (this.#totalBytes += c.record.fileSize - (previous[k]?.fileSize ?? 0)))
    const names = items.map((c) => c.fileName)
    for (const listener of this.#committedListeners) listener(names)
  }

  /** Calls `listener` with the names of the NAR files each flush committed (after their index batch is durable). */
  onNarsCommitted(listener: (fileNames: readonly string[]) => void): void {
    this.#committedListeners.push(listener)
  }

  /** The NAR files committed and not uploaded to the bucket yet (with `uploadToBucket`). */
  async *pendingUploads(): AsyncGenerator<[string, PendingUpload]> {
    for await (const entry of this.#ix.uploads.iterator()) yield entry
  }

  /** Records that a NAR file is in the bucket (or gone from the store): it is no longer to be uploaded. */
  async clearUpload(fileName: string): Promise<void> {
    try {
      await this.#ix.uploads.del(fileName)
    } catch (err) {
      throw ioError('cannot write the index', err)
    }
  }

  /**
   * Removes a NAR file and its index entry (index first, so it never names a
   * missing file). With `moveTo`, the file is moved there instead of deleted.
   */
  async removeNar(fileName: string, moveTo?: string): Promise<void> {
    const record = await this.#ix.nars.get(fileName)
    await this.#ix.nars.del(fileName)
    await this.#ix.access.del(fileName)
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
    const record = await this.#ix.narinfos.get(hashPart)
    const firstNarHash = options.releasePin ? await this.#ix.first.get(hashPart) : undefined
    let fileName: string | undefined
    try {
      fileName = record ? narFileNameOf(parseNarInfo(record.narinfo)) : undefined
    } catch {
      fileName = undefined
    }
    const ops = [
      ...(record ? [{ type: 'del' as const, sublevel: this.#ix.narinfos, key: hashPart }] : []),
      ...(fileName ? [{ type: 'del' as const, sublevel: this.#ix.byNar, key: `${fileName}/${hashPart}` }] : []),
      ...(firstNarHash !== undefined ? [{ type: 'del' as const, sublevel: this.#ix.first, key: hashPart }] : []),
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
