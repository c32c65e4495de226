/**
 * Seeding an air-gapped network: on the connected side `narthex mirror` pulls
 * closures through policy and `narthex export` writes a binary cache; on the
 * isolated side `narthex import` loads it and `narthex serve` runs with no
 * upstream at all. Real nix on both ends.
 */
import assert from 'node:assert/strict'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { hashPartOf, tamperNar } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

describe('mirror, export, import, serve offline', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let up: StaticServer
  let connected: NarthexProcess
  let isolated: NarthexProcess
  let exportDir: string

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ m1: {}, m2: { deps: ['m1'] }, mtop: { deps: ['m1', 'm2'], bigBytes: 50_000 }, other: {} })
    const key = await nix.genKey('up-1')
    await nix.sign(key.secretFile, [paths.mtop, paths.other])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.mtop, paths.other], { compression: 'zstd' })
    up = await startStaticServer(dir)
    connected = await NarthexProcess.start({ upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }] })
    assert.equal(await connected.stop(), 0)
    exportDir = nix.freshDir('export')
  })

  after(async () => {
    await connected?.cleanup()
    await isolated?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  test('mirror pulls and pins whole closures; export writes a cache real nix accepts', async () => {
    const listFile = join(nix.dir, 'paths.txt')
    await writeFile(listFile, `# roots\n${paths.mtop}\n`)
    const mirror = await runCli(['mirror', '--from-file', listFile, '--config', connected.configFile])
    assert.equal(mirror.code, 0, mirror.stdout + mirror.stderr)
    assert.match(mirror.stdout, /mirrored and pinned 3 path/)
    assert.equal(up.count('/nar/'), 3)

    const exp = await runCli(['export', '--to', exportDir, '--config', connected.configFile])
    assert.equal(exp.code, 0, exp.stdout + exp.stderr)
    assert.match(exp.stdout, /exported to .* 3 path/)
    assert.equal((await readdir(exportDir)).filter((f) => f.endsWith('.narinfo')).length, 3)
    const { store } = await nix.substitute(`file://${exportDir}`, [paths.mtop], [connected.publicKey])
    for (const p of [paths.m1, paths.m2, paths.mtop]) await nix.verifyPath(store, p)
  })

  test('the isolated side imports it and serves it with no upstream', async () => {
    isolated = await NarthexProcess.start({ upstreams: [], rules: [{ match: '*', upstreams: [], minSignatures: 0 }], import: { publicKeys: [connected.publicKey] } })
    assert.equal(await isolated.stop(), 0)
    const imp = await runCli(['import', exportDir, '--config', isolated.configFile])
    assert.equal(imp.code, 0, imp.stdout + imp.stderr)
    assert.match(imp.stdout, /imported and pinned 3 path/)
    await isolated.restart()
    const { store } = await nix.substitute(isolated.url, [paths.mtop], [isolated.publicKey])
    for (const p of [paths.m1, paths.m2, paths.mtop]) await nix.verifyPath(store, p)
    assert.equal((await fetch(`${isolated.url}/${hashPartOf(paths.other)}.narinfo`)).status, 404, 'never mirrored, not there')
    const audit = await runCli(['audit', '--config', isolated.configFile])
    assert.equal(audit.stdout.trim().split('\n').filter((l) => /^\S+\s+import\s/.test(l)).length, 3)
  })

  test('a tampered export is refused path by path; the rest still imports', async () => {
    assert.equal(await isolated.stop(), 0)
    const fresh = await NarthexProcess.start({ upstreams: [], rules: [{ match: '*', upstreams: [], minSignatures: 0 }], import: { publicKeys: [connected.publicKey] } })
    assert.equal(await fresh.stop(), 0)
    await tamperNar(exportDir, paths.m2, 'm2', 'XX')
    const imp = await runCli(['import', exportDir, '--config', fresh.configFile])
    assert.equal(imp.code, 1)
    assert.match(imp.stdout, /imported and pinned 2 path\(s\); 1 failed/)
    assert.match(imp.stdout, new RegExp(`${hashPartOf(paths.m2)}: .*does not match`))
    const wrongKey = await NarthexProcess.start({ upstreams: [], rules: [{ match: '*', upstreams: [], minSignatures: 0 }], import: { publicKeys: ['other-1:tLAEn+EeaBUJYqEpTd2yeerr7Ic6+0vWe+aXL/vYUpE='] } })
    assert.equal(await wrongKey.stop(), 0)
    const refused = await runCli(['import', exportDir, '--config', wrongKey.configFile])
    assert.equal(refused.code, 1)
    assert.match(refused.stdout, /imported and pinned 0 path/)
    assert.ok((await readFile(join(wrongKey.dataDir, 'audit.log'), 'utf8')).includes('PUSH_REFUSED'))
    await fresh.cleanup()
    await wrongKey.cleanup()
  })
})
