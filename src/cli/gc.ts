/**
 * `narthex gc`: evict least-recently-used NARs (not pinned, not pushed or
 * imported) until the store is under a size. Needs the data directory to itself
 * (narthex stopped); a running narthex does the same by itself when
 * `storage.maxSize` is set.
 */
import { Store } from '../store/index.js'

/** Runs `narthex gc`; returns the exit code. */
export async function runGc(dataDir: string, maxBytes: number, out: (line: string) => void): Promise<number> {
  const { store } = await Store.open(dataDir)
  try {
    const before = store.totalBytes
    const { evicted, freedBytes } = await store.collectGarbage(maxBytes)
    const mib = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`
    out(`store: ${mib(before)} before, ${mib(store.totalBytes)} after; evicted ${evicted.length} NAR file(s), ${mib(freedBytes)}`)
    if (store.totalBytes > maxBytes) {
      out(`still above ${mib(maxBytes)}: the rest is pinned, pushed or imported`)
      return 1
    }
    return 0
  } finally {
    await store.close()
  }
}
