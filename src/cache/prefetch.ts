/**
 * Prefetch: work done ahead of the client, through the same policy and the
 * same verified downloads as a client's request.
 *
 * - References: once a path is admitted, its references' narinfos are looked
 *   up, a few at a time, so a closure's narinfos are ready by the time Nix asks.
 * - NARs (`prefetch.nars`): Nix asks for a narinfo only for a path it lacks,
 *   and downloads the NARs once it has queried the whole closure. So when a
 *   client is served the narinfo of a path admitted by this process whose NAR
 *   is not stored, its NAR download starts at once instead of when Nix gets to
 *   it. Bounded: at most `maxNarsInFlight` downloads, at most `maxBytesAhead`
 *   bytes of prefetched NARs no client has asked for yet (downloading or
 *   stored), and never past the store's size limit. A prefetched NAR that
 *   fails verification fails like any download (audited, its source skipped).
 */
import { boundedLru } from '../lru.js'
import type { Logger } from 'pino'
import { parseStorePathBase, type NarInfo } from '../protocol/index.js'
import type { NarAnswer } from './fetch-nar.js'
import type { Metrics } from './metrics.js'
import type { NarInfoAnswer } from './resolve-narinfo.js'

/** Settings of prefetch (the config's `prefetch` section, and the store's size limit). */
export interface PrefetchSettings {
  /** Look up the references of admitted paths. */
  readonly prefetchReferences: boolean
  /** Download the NAR of a path whose narinfo a client was served from a miss. */
  readonly prefetchNars: boolean
  readonly prefetchMaxInFlight: number
  /** NAR downloads prefetch runs at once (default 8). */
  readonly prefetchMaxNarsInFlight?: number | undefined
  /** Bytes of prefetched NARs no client asked for yet beyond which prefetch waits (default 256 MiB). */
  readonly prefetchMaxBytesAhead?: number | undefined
  /** The store's size limit (storage.maxSize): prefetch never fills it. */
  readonly maxStoreBytes?: number | undefined
}

/** What a {@link Prefetcher} works with. */
export interface PrefetchDeps {
  readonly settings: PrefetchSettings
  readonly log: Logger
  readonly metrics: Metrics
  /** Resolves a narinfo as a client request would. */
  readonly getNarInfo: (hashPart: string) => Promise<NarInfoAnswer>
  /** Fetches a NAR as a client request would. */
  readonly getNar: (fileName: string) => Promise<NarAnswer>
  /** True when a hash part needs no look-up ahead (served lately, or being resolved). */
  readonly isKnown: (hashPart: string) => boolean
  /** Bytes the store holds now. */
  readonly storedBytes: () => number
}

// Bounds the queue's memory when admissions outpace the look-ups.
const MAX_QUEUED = 10_000
const DEFAULT_MAX_NARS_IN_FLIGHT = 8
const DEFAULT_MAX_BYTES_AHEAD = 256 * 1024 * 1024
// A prefetched NAR no client asked for within this long counts as unused.
const UNUSED_AFTER_MS = 10 * 60_000

/** A NAR prefetched (or being prefetched) that no client has asked for yet. */
interface Ahead {
  readonly bytes: number
  timer?: NodeJS.Timeout
}

/** Looks up references and downloads NARs ahead of the client, in the background. */
export class Prefetcher {
  readonly #d: PrefetchDeps
  readonly #queue: string[] = []
  #active = 0
  /** Admitted by this process, NAR not fetched yet: hash part → NAR file name and size. */
  readonly #cold = boundedLru<string, { fileName: string; bytes: number }>(50_000)
  /** NARs waiting for a prefetch slot, in order: file name → size. */
  readonly #narQueue = new Map<string, number>()
  readonly #ahead = new Map<string, Ahead>()
  #aheadBytes = 0
  /** Bytes of prefetched NARs still downloading (not yet in the store's size). */
  #downloadingBytes = 0
  #narsActive = 0
  #closed = false

  constructor(deps: PrefetchDeps) {
    this.#d = deps
  }

  /** Bytes of prefetched NARs no client has asked for yet (downloading or stored). */
  get bytesAhead(): number {
    return this.#aheadBytes
  }

  /** NAR downloads prefetch runs now. */
  get narsInFlight(): number {
    return this.#narsActive
  }

  /** An admitted path: queues its references for look-up, and remembers it as cold (its NAR not fetched yet). */
  admitted(info: NarInfo, fileName: string): void {
    const { settings } = this.#d
    if (settings.prefetchNars && !this.#closed) this.#cold.set(info.storePath.hashPart, { fileName, bytes: info.fileSize ?? info.narSize })
    if (!settings.prefetchReferences) return
    for (const ref of info.references) {
      const hashPart = parseStorePathBase(ref).hashPart
      if (hashPart === info.storePath.hashPart || this.#d.isKnown(hashPart)) continue
      if (this.#queue.length < MAX_QUEUED) this.#queue.push(hashPart)
    }
    this.#pump()
  }

  /**
   * A client was served the narinfo of `hashPart`. When that path was admitted
   * by this process and its NAR was not fetched yet, the NAR download starts
   * (within the bounds). One Map look-up for every other narinfo.
   */
  served(hashPart: string): void {
    if (this.#cold.size === 0) return
    const cold = this.#cold.get(hashPart)
    if (!cold) return
    this.#cold.delete(hashPart)
    if (this.#closed || this.#ahead.has(cold.fileName) || this.#narQueue.has(cold.fileName)) return
    if (this.#narQueue.size >= MAX_QUEUED) return
    this.#narQueue.set(cold.fileName, cold.bytes)
    this.#pumpNars()
  }

  /** A client asked for a NAR file: a prefetched one counts as used; a queued one is left to the client. */
  asked(fileName: string): void {
    if (this.#ahead.size === 0 && this.#narQueue.size === 0) return
    this.#narQueue.delete(fileName)
    const ahead = this.#ahead.get(fileName)
    if (!ahead) return
    this.#settle(fileName, ahead, 'yes')
  }

  /** Drops the queues and starts nothing more; work running now finishes on its own. */
  close(): void {
    this.#closed = true
    this.#queue.length = 0
    this.#narQueue.clear()
    this.#cold.clear()
    for (const ahead of this.#ahead.values()) clearTimeout(ahead.timer)
  }

  #settle(fileName: string, ahead: Ahead, used: 'yes' | 'no' | undefined): void {
    if (this.#ahead.get(fileName) !== ahead) return
    this.#ahead.delete(fileName)
    clearTimeout(ahead.timer)
    this.#aheadBytes -= ahead.bytes
    if (used) this.#d.metrics.prefetchedBytes.inc({ used }, ahead.bytes)
    this.#pumpNars()
  }

  #pump(): void {
    const { settings, log } = this.#d
    while (!this.#closed && this.#active < settings.prefetchMaxInFlight && this.#queue.length > 0) {
      const hashPart = this.#queue.shift()!
      this.#active++
      this.#d
        .getNarInfo(hashPart)
        .catch((err) => log.debug({ hashPart, err: (err as Error).message }, 'prefetch failed'))
        .finally(() => {
          this.#active--
          this.#pump()
        })
    }
  }

  #pumpNars(): void {
    const { settings } = this.#d
    const maxInFlight = settings.prefetchMaxNarsInFlight ?? DEFAULT_MAX_NARS_IN_FLIGHT
    const maxAhead = settings.prefetchMaxBytesAhead ?? DEFAULT_MAX_BYTES_AHEAD
    for (const [fileName, bytes] of this.#narQueue) {
      if (this.#closed || this.#narsActive >= maxInFlight) return
      // One NAR larger than the whole budget still goes, alone.
      if (this.#aheadBytes > 0 && this.#aheadBytes + bytes > maxAhead) return
      this.#narQueue.delete(fileName)
      // Never fills the store past its limit: what the clients ask for is fetched on demand.
      // A prefetched NAR counts here while it downloads; once stored, the store's size has it.
      if (settings.maxStoreBytes !== undefined && this.#d.storedBytes() + this.#downloadingBytes + bytes > settings.maxStoreBytes) continue
      this.#start(fileName, bytes)
    }
  }

  #start(fileName: string, bytes: number): void {
    const ahead: Ahead = { bytes }
    this.#ahead.set(fileName, ahead)
    this.#aheadBytes += bytes
    this.#downloadingBytes += bytes
    this.#narsActive++
    const unused = () => {
      if (this.#ahead.get(fileName) !== ahead) return
      ahead.timer = setTimeout(() => this.#settle(fileName, ahead, 'no'), UNUSED_AFTER_MS)
      ahead.timer.unref()
    }
    this.#d
      .getNar(fileName)
      .then(async (answer) => {
        if (answer.kind === 'following') {
          await answer.follower.completed()
          unused()
        } else {
          // Stored already, or not to be had now: nothing was downloaded ahead.
          this.#settle(fileName, ahead, undefined)
        }
      })
      .catch((err) => {
        this.#settle(fileName, ahead, undefined)
        this.#d.log.debug({ fileName, err: (err as Error).message }, 'NAR prefetch failed')
      })
      .finally(() => {
        this.#downloadingBytes -= bytes
        this.#narsActive--
        this.#pumpNars()
      })
  }
}
