/**
 * Prefetch: when a path is admitted, narthex looks up its references ahead of
 * the client (through the same policy), and with `prefetch.nars` their NARs too.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('prefetching references', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let key: NixKey
  let dir: string
  let up: StaticServer
  const running: NarthexProcess[] = []

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ r1: {}, r2: { deps: ['r1'] }, top: { deps: ['r1', 'r2'] }, denied: {}, uses: { deps: ['denied'] } })
    key = await nix.genKey('pf-1')
    await nix.sign(key.secretFile, [paths.top, paths.uses])
    dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.top, paths.uses])
    up = await startStaticServer(dir)
  })

  after(async () => {
    for (const n of running) await n.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  async function start(prefetch: Record<string, unknown>) {
    const n = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }],
      rules: [
        { match: 'denied', upstreams: [], minSignatures: 0 },
        { match: '*', upstreams: ['up'], minSignatures: 1 },
      ],
      prefetch,
    })
    running.push(n)
    up.requests.length = 0
    return n
  }

  test('references\' narinfos are admitted before the client asks; their NARs are not fetched', async () => {
    const n = await start({ references: true, nars: false })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.top)}.narinfo`)).status, 200)
    for (const ref of [paths.r1, paths.r2]) await until(`${ref} prefetched`, () => up.count(`/${hashPartOf(ref)}.narinfo`) === 1)
    await until('admissions logged', () => n.logged('admitted').length === 3)
    assert.equal(up.count('/nar/'), 0)
    // The client's own look-ups are now answered from the store.
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.r1)}.narinfo`)).status, 200)
    assert.equal(up.count(`/${hashPartOf(paths.r1)}.narinfo`), 1)
  })

  test('with prefetch.nars the references\' NARs are fetched and verified too', async () => {
    const n = await start({ references: true, nars: true })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.top)}.narinfo`)).status, 200)
    for (const ref of [paths.r1, paths.r2]) {
      const nar = (await readCacheNarInfo(dir, ref)).url
      await until(`${ref} NAR prefetched`, () => up.count(`/${nar}`) === 1)
    }
    await until('NARs stored', () => n.logged('NAR verified and stored').length === 2)
    const { store } = await nix.substitute(n.url, [paths.top], [n.publicKey])
    await nix.verifyPath(store, paths.r2)
  })

  test('prefetch goes through the policy: a denied reference is not admitted', async () => {
    const n = await start({ references: true, nars: false })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.uses)}.narinfo`)).status, 200)
    await until('the denied reference was looked up', () => up.count(`/${hashPartOf(paths.denied)}.narinfo`) === 1)
    await until('its refusal logged', () => n.logged('refused').length === 1)
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.denied)}.narinfo`)).status, 404)
  })

  test('without prefetch nothing is looked up ahead', async () => {
    const n = await start({ references: false })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.top)}.narinfo`)).status, 200)
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(up.requests.filter((r) => r.url.endsWith('.narinfo')).length, 1)
  })
})
