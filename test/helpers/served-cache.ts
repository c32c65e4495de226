/**
 * A narthex HTTP server (the real node:http front, on 127.0.0.1) over a fresh
 * cache with fake upstreams, for tests of what clients get over the wire.
 */
import type { Server } from 'node:http'
import { afterEach } from 'node:test'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { AccessControl, createNarthexServer } from '../../src/server/index.js'
import { startCache, type CacheUnderTest } from './fake-cache.js'

/** A served cache: its base URL, the cache under it, and a close for both. */
export interface ServedCache {
  readonly base: string
  readonly t: CacheUnderTest
  close(): Promise<void>
}

/** Starts a cache and serves it with public reading, or with `access`. */
export async function serveCache(access: AccessControl = new AccessControl(false, [])): Promise<ServedCache> {
  const t = await startCache()
  const server: Server = createNarthexServer({ cache: t.cache, metrics: t.metrics, log: pino({ level: 'silent' }), priority: 40, publicKey: 'narthex-test:unused', access })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    t,
    close: async () => {
      await new Promise((r) => server.close(r))
      await t.close()
    },
  }
}

/**
 * For a test file: `serve(access?)` starts a served cache (closed after each
 * test) and returns its base URL; `cache()` is the cache under the current one.
 */
export function servedCaches(): { serve: (access?: AccessControl) => Promise<string>; cache: () => CacheUnderTest } {
  let served: ServedCache | undefined
  afterEach(async () => {
    await served?.close()
    served = undefined
  })
  return {
    serve: async (access) => {
      served = await serveCache(access)
      return served.base
    },
    cache: () => {
      if (!served) throw new Error('no cache served in this test')
      return served.t
    },
  }
}
