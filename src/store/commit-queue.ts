/**
 * Group commit: work that must reach the disk (fsyncs, renames, synced index
 * batches) is queued, and one flush takes everything queued so far. While a
 * flush runs, newly added items wait and the next flush takes them all, so a
 * lone item is flushed at once (no timer, no added latency) and a burst of
 * items costs one round of fsyncs instead of one per item.
 *
 * Exclusive tasks run between two flushes, never during one: the background
 * repair (recovery.ts) removes unindexed files that way, so it can never remove
 * a file a flush has just renamed into `nar/` and not indexed yet.
 */
import { constants as fsConstants } from 'node:fs'
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { NarFileRecord } from './records.js'

/** How one item of a flush ended: undefined for success, or its error. */
export type ItemOutcome = Error | undefined

interface Queued<T> {
  readonly item: T
  resolve(): void
  reject(err: Error): void
}

interface Exclusive {
  readonly run: () => Promise<void>
}

/** A queue whose items are flushed in groups by `flush` (see the module comment). */
export class CommitQueue<T> {
  readonly #flush: (items: readonly T[]) => Promise<readonly ItemOutcome[]>
  readonly #queue: Array<Queued<T> | Exclusive> = []
  #running = false
  #idle: Array<() => void> = []
  /** Flushes run so far, and items they carried (figures for tests and logs). */
  flushes = 0
  items = 0

  /**
   * @param flush makes a group durable; returns one outcome per item, in
   *   order. A throw fails every item of the group with that error.
   */
  constructor(flush: (items: readonly T[]) => Promise<readonly ItemOutcome[]>) {
    this.#flush = flush
  }

  /** Queues an item; resolves once the flush that took it succeeded for it, rejects with its error. */
  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject })
      this.#pump()
    })
  }

  /** Runs `task` alone, between two flushes. */
  exclusive<R>(task: () => Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ run: () => task().then(resolve, reject) })
      this.#pump()
    })
  }

  /** Resolves once everything queued so far is flushed. */
  drain(): Promise<void> {
    if (!this.#running && this.#queue.length === 0) return Promise.resolve()
    return new Promise<void>((r) => this.#idle.push(r))
  }

  #pump(): void {
    if (this.#running) return
    this.#running = true
    // Started on the next tick: items added in the same turn of the event loop join the group.
    queueMicrotask(() => void this.#loop())
  }

  async #loop(): Promise<void> {
    while (this.#queue.length > 0) {
      const head = this.#queue[0]
      if ('run' in head) {
        this.#queue.shift()
        await head.run().catch(() => undefined)
        continue
      }
      let n = 0
      while (n < this.#queue.length && !('run' in this.#queue[n])) n++
      const group = this.#queue.splice(0, n) as Array<Queued<T>>
      this.flushes++
      this.items += group.length
      let outcomes: readonly ItemOutcome[]
      try {
        outcomes = await this.#flush(group.map((q) => q.item))
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err))
        outcomes = group.map(() => e)
      }
      group.forEach((q, i) => {
        const err = outcomes[i]
        if (err) q.reject(err)
        else q.resolve()
      })
    }
    this.#running = false
    const idle = this.#idle
    this.#idle = []
    for (const r of idle) r()
  }
}

/** Fsyncs a directory, making the renames into it durable. */
export async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
  try {
    await dh.sync()
  } finally {
    await dh.close()
  }
}

/** One verified NAR file waiting to be committed into the store. */
export interface NarCommit {
  readonly tempPath: string
  readonly fileName: string
  readonly record: NarFileRecord
  /** The temp file, still open: fsynced and closed by the commit. */
  readonly handle: FileHandle | undefined
}

/** What {@link flushNarCommits} works with. */
export interface NarFlushDeps {
  /** Where a NAR file goes in the store. */
  narPath(fileName: string): string
  /** Shard directories known to exist (filled as they are made). */
  readonly shards: Set<string>
  /** Indexes the files made durable and renamed in, in one synced batch; throws when it cannot. */
  index(items: readonly NarCommit[]): Promise<void>
}

/**
 * Commits a group of NAR files: fsyncs them all (in parallel: the libuv pool
 * runs several fsyncs at once), renames them into their shards, fsyncs each
 * shard directory touched once, then indexes them in one batch. An item that
 * fails a step goes no further; the others carry on.
 */
export async function flushNarCommits(items: readonly NarCommit[], deps: NarFlushDeps): Promise<ItemOutcome[]> {
  const outcomes: ItemOutcome[] = items.map(() => undefined)
  const fail = (i: number, err: unknown) => (outcomes[i] ??= err instanceof Error ? err : new Error(String(err)))
  await Promise.all(
    items.map(async (c, i) => {
      try {
        const fh = c.handle ?? (await open(c.tempPath, 'r'))
        try {
          await fh.sync()
        } finally {
          await fh.close()
        }
      } catch (err) {
        fail(i, err)
      }
    }),
  )
  const dirs = new Map<string, number[]>()
  await Promise.all(
    items.map(async (c, i) => {
      if (outcomes[i]) return
      const dest = deps.narPath(c.fileName)
      const dir = dirname(dest)
      try {
        if (!deps.shards.has(dir)) {
          await mkdir(dir, { recursive: true })
          deps.shards.add(dir)
        }
        await rename(c.tempPath, dest)
        dirs.set(dir, [...(dirs.get(dir) ?? []), i])
      } catch (err) {
        fail(i, err)
      }
    }),
  )
  await Promise.all(
    [...dirs].map(async ([dir, members]) => {
      try {
        await syncDir(dir)
      } catch (err) {
        for (const i of members) fail(i, err)
      }
    }),
  )
  const ready = items.filter((_, i) => !outcomes[i])
  if (ready.length === 0) return outcomes
  try {
    await deps.index(ready)
  } catch (err) {
    items.forEach((_, i) => {
      if (!outcomes[i]) fail(i, err)
    })
  }
  return outcomes
}
