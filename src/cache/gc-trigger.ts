/**
 * Keeping the store within `storage.maxSize`: after a NAR is stored, a store
 * grown past the limit evicts its least-recently-used NARs, one collection at a
 * time, in the background.
 */
import type { Logger } from 'pino'
import type { Store } from '../store/index.js'

/** What a {@link GcTrigger} works with. */
export interface GcTriggerDeps {
  readonly store: Store
  readonly log: Logger
  /** Evict least-recently-used NARs when the store grows past this; undefined never evicts. */
  readonly maxStoreBytes: number | undefined
  /** Told of the NAR files a collection evicted. */
  readonly onEvicted: (fileNames: readonly string[]) => void
}

/** Starts a garbage collection when the store is over its limit. */
export class GcTrigger {
  readonly #d: GcTriggerDeps
  #running = false

  constructor(deps: GcTriggerDeps) {
    this.#d = deps
  }

  /**
   * Evicts least-recently-used NARs down to 90% of `maxStoreBytes` when the
   * store is larger; does nothing while a collection runs. Never throws: a
   * failed collection is logged.
   */
  collectIfNeeded(): void {
    const { store, log, maxStoreBytes: max } = this.#d
    if (max === undefined || this.#running || store.totalBytes <= max) return
    this.#running = true
    const started = Date.now()
    store
      .collectGarbage(Math.floor(max * 0.9))
      .then(({ evicted, freedBytes }) => {
        this.#d.onEvicted(evicted)
        log.info({ evicted: evicted.length, freedBytes, totalBytes: store.totalBytes, durationMs: Date.now() - started }, 'evicted least-recently-used NARs')
      })
      .catch((err) => log.error({ err: (err as Error).message }, 'garbage collection failed'))
      .finally(() => {
        this.#running = false
      })
  }
}
