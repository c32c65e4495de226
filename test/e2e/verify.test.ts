/**
 * `narthex verify`: stored NARs re-hashed; a corrupt one is quarantined and
 * fetched again on the next request.
 */
import assert from 'node:assert/strict'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()


describe('narthex verify', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let up: StaticServer
  let narthex: NarthexProcess

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ v1: {}, v2: { deps: ['v1'], bigBytes: 300_000 } })
    const key = await nix.genKey('v-1')
    await nix.sign(key.secretFile, [paths.v2])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.v2])
    up = await startStaticServer(dir)
    narthex = await NarthexProcess.start({ upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }] })
    await nix.substitute(narthex.url, [paths.v2], [narthex.publicKey])
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  test('refuses to run beside a running narthex, with a clear message', async () => {
    const r = await runCli(['verify', '--config', narthex.configFile])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /another narthex running/)
  })

  test('an intact store verifies; a flipped byte is found, quarantined and fetched again', async () => {
    assert.equal(await narthex.stop(), 0)
    const ok = await runCli(['verify', '--config', narthex.configFile])
    assert.equal(ok.code, 0, ok.stdout)
    assert.match(ok.stdout, /checked 2 NAR file\(s\).*: 0 corrupt/)

    const shard = (await readdir(join(narthex.dataDir, 'nar')))[0]
    const name = (await readdir(join(narthex.dataDir, 'nar', shard)))[0]
    const file = join(narthex.dataDir, 'nar', shard, name)
    const bytes = await readFile(file)
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1] ^ 0x01
    await writeFile(file, bytes)

    const bad = await runCli(['verify', '--config', narthex.configFile])
    assert.equal(bad.code, 1)
    assert.match(bad.stdout, new RegExp(`${name}: (HASH_MISMATCH|NAR_INVALID)`))
    assert.equal((await readdir(join(narthex.dataDir, 'quarantine'))).length, 1)
    assert.equal((await runCli(['verify', '--config', narthex.configFile])).code, 0, 'after quarantine the store is clean')

    await narthex.restart()
    const before = up.count('/nar/')
    const { store } = await nix.substitute(narthex.url, [paths.v2], [narthex.publicKey])
    await nix.verifyPath(store, paths.v2)
    assert.equal(up.count('/nar/'), before + 1, 'exactly the quarantined NAR was fetched again')
  })
})
