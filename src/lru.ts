/**
 * In-memory LRU caches of at most a number of entries, whose memory grows with use.
 *
 * lru-cache given `max` allocates and fills every slot up front: the core's caches
 * (up to 100,000 entries each) took about 40 ms of each start and a few megabytes of old
 * space that the first requests then paid for in garbage collection. Bounding the same count
 * through `maxSize` (every entry of size 1) allocates as entries come.
 */
import { LRUCache } from 'lru-cache'

/** lru-cache's options, without the ways of bounding it: `entries` does that. */
export type LruOptions<K extends NonNullable<unknown>, V extends NonNullable<unknown>> = Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation' | 'maxEntrySize'>

/** An LRU cache of at most `entries` entries (at least one). */
export function boundedLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(entries: number, options: LruOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: Math.max(1, entries), sizeCalculation: one })
}

const one = (): number => 1
