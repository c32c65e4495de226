/**
 * Eviction: with `storage.maxSize`, narthex drops the least-recently-used NARs
 * (never a pinned, pushed or imported one) and fetches them again on demand.
 */
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

async function storedFiles(dataDir: string): Promise<string[]> {
  const out: string[] = []
  for (const shard of await readdir(join(dataDir, 'nar'))) out.push(...(await readdir(join(dataDir, 'nar', shard))))
  return out.sort()
}

describe('least-recently-used eviction', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let up: StaticServer
  let narthex: NarthexProcess
  const urls: Record<string, string> = {}

  before(async () => {
    nix = await NixEnv.create()
    // Random blobs do not compress: each NAR file is a little over 300 kB.
    paths = await nix.buildClosure({ ga: { bigBytes: 300_000 }, gb: { bigBytes: 300_000 }, gc: { bigBytes: 300_000 } })
    const key = await nix.genKey('gc-1')
    await nix.sign(key.secretFile, Object.values(paths))
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, Object.values(paths))
    up = await startStaticServer(dir)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }],
      storage: { maxSize: 700_000 },
      prefetch: { references: false, nars: false },
    })
    for (const [name, p] of Object.entries(paths)) {
      urls[name] = `${narthex.url}/${parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(p)}.narinfo`)).text()).url}`
    }
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  const get = async (name: string) => Buffer.from(await (await fetch(urls[name])).arrayBuffer())

  test('past storage.maxSize the least recently used NAR goes, and comes back on demand', async () => {
    const a = await get('ga')
    await get('gb')
    assert.deepEqual((await get('ga')).equals(a), true, 'ga is used again: gb is now the least recent')
    await get('gc')
    await narthex.waitForLog('evicted least-recently-used NARs')
    const left = await storedFiles(narthex.dataDir)
    assert.equal(left.length, 2)
    assert.ok(!left.includes(urls.gb.split('/').pop()!), 'gb was evicted')
    assert.equal(up.count('/nar/'), 3)
    const again = await get('gb')
    assert.equal(up.count('/nar/'), 4, 'gb was fetched again')
    const { store } = await nix.substitute(narthex.url, [paths.gb], [narthex.publicKey])
    await nix.verifyPath(store, paths.gb)
    assert.ok(again.length > 300_000)
  })

  test('narthex gc evicts down to a size offline', async () => {
    assert.equal(await narthex.stop(), 0)
    const r = await runCli(['gc', '--max-size', '400kB', '--config', narthex.configFile])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /evicted 1 NAR file/)
    assert.equal((await storedFiles(narthex.dataDir)).length, 1)
    const bad = await runCli(['gc', '--max-size', 'lots', '--config', narthex.configFile])
    assert.equal(bad.code, 2)
  })
})
