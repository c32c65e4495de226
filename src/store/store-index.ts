/**
 * The store's LevelDB index: opening it, and the sublevels it is made of. One
 * synced batch may write to several sublevels, which is what keeps an
 * admission, its first NarHash and its audit event (or a NAR's commit and its
 * upload to the bucket) durable together.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import { NarthexError } from '../errors.js'
import type { AuditEvent } from './audit.js'
import type { NarFileRecord, NarInfoRecord, RealisationRecord } from './records.js'

/** A NAR file waiting to be uploaded to the bucket (the `upload` sublevel, keyed by file name). */
export interface PendingUpload {
  readonly fileSize: number
  readonly queuedAt: number
}

/** A store I/O error naming what failed and the errno code. */
export function ioError(what: string, err: unknown): NarthexError {
  return new NarthexError('STORE_IO', `${what}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
}

/** The typed sublevels of the index. */
export function openSublevels(db: Level<string, string>) {
  return {
    narinfos: db.sublevel<string, NarInfoRecord>('narinfo', { valueEncoding: 'json' }),
    nars: db.sublevel<string, NarFileRecord>('nar', { valueEncoding: 'json' }),
    /** The NarHash first admitted for a hash part, kept after its narinfo is dropped. */
    first: db.sublevel<string, string>('first', { valueEncoding: 'utf8' }),
    /** `<fileName>/<hashPart>` for every narinfo naming a NAR file. */
    byNar: db.sublevel<string, string>('bynar', { valueEncoding: 'utf8' }),
    access: db.sublevel<string, number>('access', { valueEncoding: 'json' }),
    pins: db.sublevel<string, number>('pin', { valueEncoding: 'json' }),
    realisations: db.sublevel<string, RealisationRecord>('realisation', { valueEncoding: 'json' }),
    listings: db.sublevel<string, string>('listing', { valueEncoding: 'utf8' }),
    auditOutbox: db.sublevel<string, AuditEvent>('auditOutbox', { valueEncoding: 'json' }),
    uploads: db.sublevel<string, PendingUpload>('upload', { valueEncoding: 'json' }),
  }
}

/** Counts the keys of a sublevel (no values are read). */
export async function countKeys(sublevel: { keys(): AsyncIterable<string> }): Promise<number> {
  let n = 0
  for await (const _ of sublevel.keys()) n++
  return n
}

/** The sublevels of an open index. */
export type Sublevels = ReturnType<typeof openSublevels>

/**
 * Creates the data directory's folders and opens its index.
 * @throws NarthexError STORE_IO (another narthex holding the LevelDB lock, permissions, a full disk).
 */
export async function openIndexDb(dataDir: string): Promise<Level<string, string>> {
  try {
    for (const dir of ['nar', 'tmp', 'uploads']) await mkdir(join(dataDir, dir), { recursive: true })
  } catch (err) {
    throw ioError(`cannot create the data directory ${dataDir}`, err)
  }
  // Loaded here, not with this module: a cluster worker, whose bundle has this module too
  // (through the server layer), never opens an index and skips LevelDB's code.
  const { Level } = await import('level')
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
  return db
}
