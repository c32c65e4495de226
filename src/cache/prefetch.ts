/**
 * Prefetch: once a path is admitted, its references are looked up ahead of the
 * client (and, when configured, their NARs downloaded), a few at a time, so a
 * closure's narinfos are ready by the time Nix asks for them.
 */
import type { Logger } from 'pino'
import { parseNarInfo, parseStorePathBase, type NarInfo } from '../protocol/index.js'
import type { NarAnswer } from './fetch-nar.js'
import type { NarInfoAnswer } from './resolve-narinfo.js'

/** Settings of prefetch (the config's `prefetch` section). */
export interface PrefetchSettings {
  /** Look up the references of admitted paths. */
  readonly prefetchReferences: boolean
  /** Download the NARs of the references found, too. */
  readonly prefetchNars: boolean
  readonly prefetchMaxInFlight: number
}

/** What a {@link Prefetcher} works with. */
export interface PrefetchDeps {
  readonly settings: PrefetchSettings
  readonly log: Logger
  /** Resolves a narinfo as a client request would. */
  readonly getNarInfo: (hashPart: string) => Promise<NarInfoAnswer>
  /** Fetches a NAR as a client request would. */
  readonly getNar: (fileName: string) => Promise<NarAnswer>
  /** True when a hash part needs no look-up ahead (served lately, or being resolved). */
  readonly isKnown: (hashPart: string) => boolean
}

// Bounds the queue's memory when admissions outpace the look-ups.
const MAX_QUEUED = 10_000

/** Looks up the references of admitted paths in the background. */
export class Prefetcher {
  readonly #d: PrefetchDeps
  readonly #queue: string[] = []
  #active = 0
  #closed = false

  constructor(deps: PrefetchDeps) {
    this.#d = deps
  }

  /** Queues the references of an admitted path for look-up ahead of the client. */
  admitted(info: NarInfo): void {
    if (!this.#d.settings.prefetchReferences) return
    for (const ref of info.references) {
      const hashPart = parseStorePathBase(ref).hashPart
      if (hashPart === info.storePath.hashPart || this.#d.isKnown(hashPart)) continue
      if (this.#queue.length < MAX_QUEUED) this.#queue.push(hashPart)
    }
    this.#pump()
  }

  /** Drops the queue and starts nothing more; look-ups running now finish on their own. */
  close(): void {
    this.#closed = true
    this.#queue.length = 0
  }

  #pump(): void {
    const { settings, log } = this.#d
    while (!this.#closed && this.#active < settings.prefetchMaxInFlight && this.#queue.length > 0) {
      const hashPart = this.#queue.shift()!
      this.#active++
      this.#d
        .getNarInfo(hashPart)
        .then(async (answer) => {
          if (answer.kind === 'found' && settings.prefetchNars) {
            const info = parseNarInfo(answer.text)
            const nar = await this.#d.getNar(info.url.slice('nar/'.length))
            if (nar.kind === 'following') nar.follower.close()
          }
        })
        .catch((err) => log.debug({ hashPart, err: (err as Error).message }, 'prefetch failed'))
        .finally(() => {
          this.#active--
          this.#pump()
        })
    }
  }
}
