/**
 * Prefetch: when a path is admitted, narthex looks up its references ahead of
 * the client (through the same policy); with `prefetch.nars` (the default), a
 * path's NAR download starts as soon as a client is served its narinfo from a
 * miss, before the client asks for the NAR.
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

  test('with prefetch.nars a path\'s NAR is fetched and verified once a client was served its narinfo, not before', async () => {
    const n = await start({ references: true, nars: true })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.top)}.narinfo`)).status, 200)
    const narOf = async (p: string) => `/${(await readCacheNarInfo(dir, p)).url}`
    await until('NAR stored', () => n.logged('NAR verified and stored').length === 1)
    assert.equal(up.count(await narOf(paths.top)), 1)
    // The references were admitted ahead of the client, but no client lacks them yet: no NAR.
    await until('references admitted', () => n.logged('admitted').length === 3)
    await new Promise((r) => setTimeout(r, 200))
    for (const ref of [paths.r1, paths.r2]) assert.equal(up.count(await narOf(ref)), 0, `${ref}'s NAR is not fetched before its narinfo is served`)
    for (const ref of [paths.r1, paths.r2]) assert.equal((await fetch(`${n.url}/${hashPartOf(ref)}.narinfo`)).status, 200)
    await until('the references\' NARs stored', () => n.logged('NAR verified and stored').length === 3)
    const { store } = await nix.substitute(n.url, [paths.top], [n.publicKey])
    await nix.verifyPath(store, paths.r2)
    for (const p of [paths.top, paths.r1, paths.r2]) assert.equal(up.count(await narOf(p)), 1, 'each NAR is downloaded once')
    const metrics = await (await fetch(`${n.url}/metrics`)).text()
    assert.match(metrics, /narthex_prefetched_bytes_total\{used="yes"\} [1-9]/, 'the prefetched bytes nix then asked for are counted')
  })

  test('prefetch goes through the policy: a denied reference is not admitted', async () => {
    const n = await start({ references: true, nars: false })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.uses)}.narinfo`)).status, 200)
    await until('the denied reference was looked up', () => up.count(`/${hashPartOf(paths.denied)}.narinfo`) === 1)
    await until('its refusal logged', () => n.logged('refused').length === 1)
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.denied)}.narinfo`)).status, 404)
  })

  test('without prefetch nothing is looked up ahead', async () => {
    const n = await start({ references: false, nars: false })
    assert.equal((await fetch(`${n.url}/${hashPartOf(paths.top)}.narinfo`)).status, 200)
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(up.requests.filter((r) => r.url.endsWith('.narinfo')).length, 1)
  })
})
