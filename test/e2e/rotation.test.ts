/**
 * Signing-key rotation with the real `nix` client: with two keys in
 * `signingKeyFile`, everything narthex serves or exports carries both
 * signatures, so a client trusting either one alone substitutes the closure.
 */
import assert from 'node:assert/strict'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { stringify } from 'yaml'
import { parseNarInfo } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

describe('signing-key rotation', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let upstream: StaticServer
  let narthex: NarthexProcess
  let dir: string
  let upstreamConfig: Record<string, unknown>
  let newKey: string

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ base: {}, top: { deps: ['base'] } })
    const key = await nix.genKey('up-1')
    await nix.sign(key.secretFile, [paths.top])
    const cacheDir = nix.freshDir('cache')
    await nix.copyToCache(cacheDir, [paths.top])
    upstream = await startStaticServer(cacheDir)
    upstreamConfig = { name: 'up', url: upstream.url, publicKeys: [key.publicKey], retries: 0 }
    dir = await mkdtemp(join(tmpdir(), 'narthex-rotation-'))
    // The new key, made ahead as the README's steps say.
    const made = await runCli(['keygen', 'narthex-2'])
    assert.equal(made.code, 0, made.stderr)
    await writeFile(join(dir, 'new.key'), made.stdout, { mode: 0o600 })
    newKey = made.stderr.trim()
  })

  after(async () => {
    await narthex?.cleanup()
    await upstream?.close()
    await nix?.cleanup()
  })

  test('a listed key file other than the first must exist: exit 2 naming it', async () => {
    const file = join(dir, 'missing.yaml')
    await writeFile(file, stringify({ dataDir: join(dir, 'data-missing'), signingKeyFile: [join(dir, 'old.key'), join(dir, 'absent.key')], upstreams: [upstreamConfig] }))
    const r = await runCli(['serve', '--config', file])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /signingKeyFile\[1\] .*absent\.key does not exist/)
  })

  test('both keys sign every narinfo; nix trusting only the old or only the new key substitutes the closure', async () => {
    narthex = await NarthexProcess.start(
      { upstreams: [upstreamConfig], signingKeyFile: [join(dir, 'old.key'), join(dir, 'new.key')], prefetch: { references: false } },
      { dir },
    )
    const oldKey = narthex.publicKey
    assert.match(oldKey, /^narthex-1:/, 'the first key was created on first start')
    assert.deepEqual(narthex.logged('narthex is serving')[0]?.publicKeys, [oldKey, newKey])

    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.top)}.narinfo`)).text())
    assert.deepEqual(info.sigs.map((s) => s.split(':')[0]).sort(), ['narthex-1', 'narthex-2', 'up-1'])
    for (const trusted of [oldKey, newKey]) {
      const { store } = await nix.substitute(narthex.url, [paths.top], [trusted])
      await nix.verifyPath(store, paths.top)
      await nix.verifyPath(store, paths.base)
    }
    const stranger = await nix.genKey('stranger-1')
    await assert.rejects(nix.substitute(narthex.url, [paths.base], [stranger.publicKey]), NixCommandError)

    const cc = await runCli(['client-config', '--config', narthex.configFile])
    assert.equal(cc.code, 0, cc.stderr)
    assert.ok(cc.stdout.split('\n').includes(`trusted-public-keys = ${oldKey} ${newKey}`), cc.stdout)
    const page = await (await fetch(`${narthex.url}/`)).text()
    assert.ok(page.includes(`trusted-public-keys = ${oldKey} ${newKey}`), 'the status page shows both keys')
  })

  test('export signs with every key: a client trusting only the new one substitutes from the exported cache', async () => {
    await narthex.stop()
    const out = join(dir, 'export')
    const r = await runCli(['export', '--to', out, paths.top, '--config', narthex.configFile])
    assert.equal(r.code, 0, r.stderr)
    assert.ok(r.stdout.includes(newKey), r.stdout)
    const { store } = await nix.substitute(`file://${out}`, [paths.top], [newKey])
    await nix.verifyPath(store, paths.top)
  })
})
