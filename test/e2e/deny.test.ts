/**
 * The deny lists applied to what narthex already stored, with the real `nix`
 * client: a path admitted on a key later put on `deny.keys` stops being served
 * after a restart and is admitted again from a source signed by another trusted
 * key; a stored path put on `deny.paths` is refused though every rule would
 * admit it; the first-seen NarHash still refuses another copy until `narthex
 * forget` releases it. Also: a catch-all deny rule starts and denies.
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parse, stringify } from 'yaml'
import { formatNixHash, parseNarInfo } from '../../src/protocol/index.js'
import { forgeNar, hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

/** An audit entry as `narthex audit --json` prints it. */
interface AuditLine {
  decision: string
  storePath: string
  reason?: string
  narHash?: string
  message?: string
}

describe('deny lists applied to the stored paths, and narthex forget', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let keyA: NixKey
  let keyB: NixKey
  let a: StaticServer
  let b: StaticServer
  let aDir: string
  let bDir: string
  let narthex: NarthexProcess

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ 'keyed-k': {}, 'victim-p': {}, 'rebuilt-r': {} })
    keyA = await nix.genKey('a-1')
    keyB = await nix.genKey('b-1')
    await nix.sign(keyA.secretFile, [paths['keyed-k'], paths['rebuilt-r']])
    await nix.sign(keyB.secretFile, [paths['victim-p']])
    aDir = nix.freshDir('a')
    bDir = nix.freshDir('b')
    await nix.copyToCache(aDir, [paths['keyed-k'], paths['rebuilt-r']])
    await nix.copyToCache(bDir, [paths['victim-p']])
    a = await startStaticServer(aDir)
    b = await startStaticServer(bDir)
    const upstream = (name: string, server: StaticServer, key: NixKey) => ({ name, url: server.url, publicKeys: [key.publicKey], timeoutMs: 2000, retries: 0 })
    narthex = await NarthexProcess.start({
      upstreams: [upstream('a', a, keyA), upstream('b', b, keyB)],
      rules: [{ match: '*', upstreams: ['a', 'b'] }],
      cache: { negativeTtlMs: 0, unavailableTtlMs: 0 },
      prefetch: { references: false },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await a?.close()
    await b?.close()
    await nix?.cleanup()
  })

  const narinfo = (p: string) => fetch(`${narthex.url}/${hashPartOf(p)}.narinfo`)
  const auditOf = async (pathPart: string): Promise<AuditLine[]> => {
    const r = await runCli(['audit', '--config', narthex.configFile, '--json', '--path', pathPart])
    assert.equal(r.code, 0, r.stderr)
    return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine)
  }

  test('before any denial, all three paths are admitted and substituted', async () => {
    const { store } = await nix.substitute(narthex.url, [paths['keyed-k'], paths['victim-p'], paths['rebuilt-r']], [narthex.publicKey])
    for (const p of ['keyed-k', 'victim-p', 'rebuilt-r']) await nix.verifyPath(store, paths[p])
  })

  test('after a restart with the key on deny.keys and a path on deny.paths, neither is served any more', async () => {
    await narthex.stop()
    const config = parse(await readFile(narthex.configFile, 'utf8')) as Record<string, unknown>
    // The full public key: the record keeps key names, so narthex must match the signatures' bytes.
    config.deny = { keys: [keyA.publicKey], paths: [paths['victim-p']] }
    await writeFile(narthex.configFile, stringify(config))
    await narthex.restart()
    assert.equal((await narthex.waitForLog('deny lists applied to the store')).length, 1, 'the start-up walk dropped the denied records')

    const keyed = await auditOf('keyed-k')
    assert.ok(keyed.some((e) => e.decision === 'deny-applied' && e.reason === 'DENIED_KEY' && /a-1/.test(e.message ?? '')), JSON.stringify(keyed))
    const victim = await auditOf('victim-p')
    assert.ok(victim.some((e) => e.decision === 'deny-applied' && e.reason === 'DENIED'), JSON.stringify(victim))

    // keyed-k: upstream a still offers it, but only under the denied key; b does not have it.
    assert.equal((await narinfo(paths['keyed-k'])).status, 404)
    // victim-p: b still offers it under a trusted key; every rule would admit it.
    assert.equal((await narinfo(paths['victim-p'])).status, 404)
    await assert.rejects(nix.substitute(narthex.url, [paths['victim-p']], [narthex.publicKey]), NixCommandError)
    assert.ok((await auditOf('victim-p')).some((e) => e.decision === 'refuse' && e.reason === 'DENIED'))

    // explain says why: the path's own denial, and which offered signature is by a denied key.
    const path = await runCli(['explain', paths['victim-p'], '--config', narthex.configFile])
    assert.match(path.stdout, /denied: .*deny\.paths/)
    const key = await runCli(['explain', paths['keyed-k'], '--fetch', '--config', narthex.configFile])
    assert.equal(key.code, 0, key.stderr)
    assert.match(key.stdout, /never counted: +deny\.keys: 1 key\(s\) by their bytes/)
    assert.match(key.stdout, /a +sha256:.*signed by a-1; valid trusted: none; on deny\.keys: a-1/)
    assert.match(key.stdout, /INSUFFICIENT_SIGNATURES/)
  })

  test('the path of the denied key is served again once a source signed by another trusted key offers it', async () => {
    await nix.sign(keyB.secretFile, [paths['keyed-k']])
    await nix.copyToCache(bDir, [paths['keyed-k']])
    const res = await narinfo(paths['keyed-k'])
    assert.equal(res.status, 200)
    const served = parseNarInfo(await res.text())
    assert.deepEqual(served.sigs.map((s) => s.split(':')[0]).sort(), ['b-1', 'narthex-1'], 'the denied key\'s signature is not passed on')
    const { store } = await nix.substitute(narthex.url, [paths['keyed-k']], [narthex.publicKey])
    await nix.verifyPath(store, paths['keyed-k'])
  })

  test('the first-seen NarHash outlives the denial: another copy is refused until narthex forget releases it', async () => {
    // rebuilt-r was admitted on a-1 (now denied, so its record is gone); b now offers another build, signed by b-1.
    await nix.sign(keyB.secretFile, [paths['rebuilt-r']])
    await nix.copyToCache(bDir, [paths['rebuilt-r']])
    const other = await forgeNar(bDir, paths['rebuilt-r'], 'rebuilt-r', 'rebuilt-X', keyB.secretKey)
    assert.equal((await narinfo(paths['rebuilt-r'])).status, 404)
    assert.ok((await auditOf('rebuilt-r')).some((e) => e.decision === 'refuse' && e.reason === 'CONFLICT_WITH_ADMITTED'))

    const whileRunning = await runCli(['forget', paths['rebuilt-r'], '--config', narthex.configFile])
    assert.equal(whileRunning.code, 1)
    assert.match(whileRunning.stderr, /locked: is another narthex running/)
    await narthex.stop()
    assert.equal((await runCli(['forget', 'not-a-store-path', '--config', narthex.configFile])).code, 2)
    const forgot = await runCli(['forget', paths['rebuilt-r'], '--config', narthex.configFile])
    assert.equal(forgot.code, 0, forgot.stderr)
    assert.match(forgot.stdout, /forgot the first-seen NarHash sha256:/)
    const again = await runCli(['forget', paths['rebuilt-r'], '--config', narthex.configFile])
    assert.equal(again.code, 1, 'nothing left to forget')
    assert.match(again.stdout, /nothing to forget/)
    // forget signs the audit checkpoint as narthex does: it covers the forget entry.
    const lines = (await readFile(join(narthex.dataDir, 'audit.log'), 'utf8')).trim().split('\n')
    assert.match(lines.at(-1)!, /"decision":"forget"/)
    const verified = await runCli(['audit', '--verify', '--checkpoint', join(narthex.dataDir, 'audit.checkpoint'), '--public-key', narthex.publicKey, '--config', narthex.configFile])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
    assert.match(verified.stdout, new RegExp(`\\(${lines.length} entries, signed by narthex-1`))
    await narthex.restart()

    const res = await narinfo(paths['rebuilt-r'])
    assert.equal(res.status, 200)
    assert.equal(formatNixHash(parseNarInfo(await res.text()).narHash), formatNixHash(other.narHash), 'the new NarHash is admitted')
    const entries = await auditOf('rebuilt-r')
    const forget = entries.find((e) => e.decision === 'forget')
    assert.equal(forget?.narHash, formatNixHash((await readCacheNarInfo(aDir, paths['rebuilt-r'])).narHash), 'the released NarHash is recorded')
    assert.ok(entries.findIndex((e) => e.decision === 'forget') < entries.findLastIndex((e) => e.decision === 'admit'))
  })

  test('a catch-all deny rule without minSignatures starts and denies every path', async () => {
    const denying = await NarthexProcess.start({
      upstreams: [{ name: 'b', url: b.url, publicKeys: [keyB.publicKey], retries: 0 }],
      rules: [{ match: '*', upstreams: [] }],
    })
    try {
      const asked = b.count(`/${hashPartOf(paths['victim-p'])}.narinfo`)
      assert.equal((await fetch(`${denying.url}/${hashPartOf(paths['victim-p'])}.narinfo`)).status, 404)
      assert.equal(b.count(`/${hashPartOf(paths['victim-p'])}.narinfo`), asked, 'no rule may use the upstream, so it is not even asked')
      const explained = await runCli(['explain', paths['victim-p'], '--config', denying.configFile])
      assert.match(explained.stdout, /upstreams: +none: the rule denies the path/)
    } finally {
      await denying.cleanup()
    }
  })
})
