/**
 * narthex with worker processes (`workers: 2`): the same answers as a single
 * process, with hot narinfos and stored NARs served by the workers.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { get } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

describe('narthex with two worker processes', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let key: NixKey
  let up: StaticServer
  let narthex: NarthexProcess

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ w1: {}, w2: { deps: ['w1'] }, w3: { deps: ['w1', 'w2'], bigBytes: 2 * 1024 * 1024 } })
    key = await nix.genKey('wk-1')
    await nix.sign(key.secretFile, [paths.w3])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.w3], { compression: 'zstd' })
    up = await startStaticServer(dir)
    narthex = await NarthexProcess.start({
      workers: 2,
      log: { level: 'debug', requests: 'info' },
      upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }],
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  test('a client substitutes a closure through the workers, twice, from one upstream fetch', async () => {
    for (let i = 0; i < 2; i++) {
      const { store } = await nix.substitute(narthex.url, [paths.w3], [narthex.publicKey])
      for (const p of [paths.w1, paths.w2, paths.w3]) await nix.verifyPath(store, p)
    }
    assert.equal(up.count('/nar/'), 3, 'each NAR fetched from the upstream once')
  })

  test('stored NARs are served with ranges, narinfos from memory, errors as in a single process', async () => {
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.w3)}.narinfo`)).text())
    const ranged = await fetch(`${narthex.url}/${info.url}`, { headers: { range: 'bytes=10-19' } })
    assert.equal(ranged.status, 206)
    assert.equal((await ranged.arrayBuffer()).byteLength, 10)
    assert.equal((await fetch(`${narthex.url}/${'0'.repeat(32)}.narinfo`)).status, 404)
    assert.equal((await fetch(`${narthex.url}/nix-cache-info`)).status, 200)
    assert.equal((await fetch(`${narthex.url}/nix-cache-info`, { method: 'DELETE' })).status, 405)
    assert.match(await (await fetch(`${narthex.url}/metrics`)).text(), /narthex_narinfo_lookups_total/)
  })

  test('a stored NAR is sent by the worker a connection lands on, whichever worker served its narinfo', async () => {
    // Restarted, the workers remember no narinfo: one of them is asked for it, both for the NAR.
    assert.equal(await narthex.stop('SIGTERM'), 0)
    await narthex.restart()
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.w3)}.narinfo`)).text())
    const from = narthex.logs.length
    // A new connection each time, as a client's NAR download often is: the primary hands each to a worker in turn.
    for (let i = 0; i < 6; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        get(`${narthex.url}/${info.url}`, { agent: false }, (res) => {
          res.resume()
          res.once('end', () => resolve(res.statusCode ?? 0))
        }).once('error', reject)
      })
      assert.equal(status, 200)
    }
    await new Promise((r) => setTimeout(r, 300))
    const core = narthex.child!.pid!
    const sent = narthex.logs.slice(from).filter((l) => l.msg === 'request' && l.route === 'nar' && l.path === `/${info.url}`)
    assert.equal(sent.length, 6, 'one request line per NAR request')
    const senders = new Set(sent.map((l) => l.pid))
    assert.ok(!senders.has(core), `the core streamed a stored NAR (request lines: ${JSON.stringify(sent)})`)
    assert.equal(senders.size, 2, 'both workers sent it')
  })

  test('SIGTERM stops the workers and the core cleanly', async () => {
    assert.equal(await narthex.stop('SIGTERM'), 0)
    await narthex.restart()
    const { store } = await nix.substitute(narthex.url, [paths.w3], [narthex.publicKey])
    await nix.verifyPath(store, paths.w3)
  })

  test('SIGTERM to the whole process group (Ctrl-C, systemd) stops it too', async () => {
    const core = narthex.child!.pid!
    const workers = execFileSync('pgrep', ['-P', String(core)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number)
    assert.equal(workers.length, 2, 'two worker processes')
    for (const pid of [core, ...workers]) process.kill(pid, 'SIGTERM')
    const exited = await Promise.race([narthex.stop('SIGTERM'), new Promise((r) => setTimeout(() => r('hung'), 20_000))])
    assert.notEqual(exited, 'hung', 'the core did not exit within 20 s')
  })
})
