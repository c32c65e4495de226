/**
 * narthex as a substituter for the real `nix` client, in front of real binary
 * caches made by Nix and served over HTTP on 127.0.0.1.
 */
import assert from 'node:assert/strict'
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo, parsePublicKey, validSigners } from '../../src/protocol/index.js'
import { hashPartOf, readCacheNarInfo, tamperNar } from '../helpers/caches.js'
import { rawRequest } from '../helpers/http.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

let nix: NixEnv
let paths: Record<string, string>
let key1: NixKey
let key2: NixKey
let dir1: string
let dir2: string

async function narFiles(dataDir: string): Promise<string[]> {
  const out: string[] = []
  for (const shard of await readdir(join(dataDir, 'nar')).catch(() => [])) {
    for (const f of await readdir(join(dataDir, 'nar', shard))) out.push(f)
  }
  return out
}

function upstream(name: string, server: StaticServer, key: NixKey, extra: Record<string, unknown> = {}) {
  return { name, url: server.url, publicKeys: [key.publicKey], timeoutMs: 2000, retries: 0, ...extra }
}

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  paths = await nix.buildClosure({
    liba: {},
    libb: { deps: ['liba'] },
    app: { deps: ['liba', 'libb'] },
    only2: { deps: ['liba'] },
    big: { bigBytes: 24 * 1024 * 1024 },
  })
  key1 = await nix.genKey('up1-1')
  key2 = await nix.genKey('up2-1')
  // Upstream 1 has the app closure and the big path, signed by key1 (xz, and none for big).
  await nix.sign(key1.secretFile, [paths.app, paths.big])
  dir1 = nix.freshDir('cache1')
  await nix.copyToCache(dir1, [paths.app])
  await nix.copyToCache(dir1, [paths.big], { compression: 'none' })
  // Upstream 2 has the app closure too, and `only2`, signed by key2 (zstd), from a store of its own.
  const store2 = nix.freshDir('store2')
  await nix.copyToStore(store2, [paths.app, paths.only2])
  await nix.sign(key2.secretFile, [paths.app, paths.only2], store2)
  dir2 = nix.freshDir('cache2')
  await nix.copyToCache(dir2, [paths.app, paths.only2], { compression: 'zstd', store: store2 })
})

after(async () => {
  await nix?.cleanup()
})

describe('narthex in front of two upstreams', { skip }, () => {
  let up1: StaticServer
  let up2: StaticServer
  let narthex: NarthexProcess

  before(async () => {
    up1 = await startStaticServer(dir1)
    up2 = await startStaticServer(dir2)
    narthex = await NarthexProcess.start({
      upstreams: [upstream('up1', up1, key1), upstream('up2', up2, key2)],
      rules: [{ match: '*', upstreams: ['up1', 'up2'], minSignatures: 1 }],
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await up1?.close()
    await up2?.close()
  })

  test('a client trusting only narthex substitutes a closure with references', async () => {
    const { store } = await nix.substitute(narthex.url, [paths.app], [narthex.publicKey])
    for (const p of [paths.liba, paths.libb, paths.app]) await nix.verifyPath(store, p)
    assert.deepEqual(new Set(await nix.closure(paths.app, store)), new Set([paths.liba, paths.libb, paths.app]))
    assert.equal(await nix.hashPath(paths.app, store), await nix.hashPath(paths.app))
  })

  test('the served narinfo is signed by narthex, keeps the upstream signature, and points at narthex', async () => {
    const res = await fetch(`${narthex.url}/${hashPartOf(paths.app)}.narinfo`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/x-nix-narinfo')
    const info = parseNarInfo(await res.text())
    assert.deepEqual(validSigners(info, [parsePublicKey(narthex.publicKey)]), [parsePublicKey(narthex.publicKey).name])
    assert.deepEqual(validSigners(info, [parsePublicKey(key1.publicKey)]), ['up1-1'])
    assert.equal(info.url, `nar/${hashPartOf(paths.app)}/${info.url.split('/')[2]}`, 'the NAR URL does not lead with the path\'s hash part')
    assert.match(info.url, /^nar\/[0-9a-z]{32}\/[0-9a-z]{52}\.nar\.xz$/)
    const nar = await fetch(`${narthex.url}/${info.url}`)
    assert.equal(nar.status, 200)
    assert.equal(nar.headers.get('accept-ranges'), 'bytes')
    const body = Buffer.from(await nar.arrayBuffer())
    assert.equal(body.length, info.fileSize)
    // Narinfos served before keep working: their URL had no hash part.
    const flat = await fetch(`${narthex.url}/nar/${info.url.split('/')[2]}`)
    assert.equal(flat.status, 200, 'the NAR is no longer served at its flat URL')
    assert.ok(Buffer.from(await flat.arrayBuffer()).equals(body))
  })

  test('paths come from the higher-priority upstream that has them; a path only the second has is found', async () => {
    const app = hashPartOf(paths.app)
    assert.equal(up1.count(`/${app}.narinfo`), 1)
    const appNar = (await readCacheNarInfo(dir1, paths.app)).url
    assert.equal(up1.count(`/${appNar}`), 1, 'the app NAR came from up1')
    assert.equal(up2.requests.filter((r) => r.url.startsWith('/nar/')).length, 0, 'no NAR was fetched from up2')
    const { store } = await nix.substitute(narthex.url, [paths.only2], [narthex.publicKey])
    await nix.verifyPath(store, paths.only2)
    assert.equal(up2.count(`/${(await readCacheNarInfo(dir2, paths.only2)).url}`), 1)
  })

  test('HEAD and GET agree; unknown paths are 404; malformed requests are 4xx', async () => {
    const app = hashPartOf(paths.app)
    const head = await fetch(`${narthex.url}/${app}.narinfo`, { method: 'HEAD' })
    const get = await fetch(`${narthex.url}/${app}.narinfo`)
    assert.equal(head.status, 200)
    assert.equal(head.headers.get('content-length'), String((await get.text()).length))
    assert.equal((await fetch(`${narthex.url}/${'0'.repeat(32)}.narinfo`)).status, 404)
    assert.equal((await fetch(`${narthex.url}/${'e'.repeat(32)}.narinfo`)).status, 404)
    for (const path of ['/nar/%2e%2e/etc/passwd', '/nar/../../etc/passwd', '/..%2f..%2fetc/passwd', '/nar\\..\\x']) {
      assert.equal((await rawRequest(narthex.url, path)).status, 400, path)
    }
    assert.equal((await fetch(`${narthex.url}/nix-cache-info`, { method: 'DELETE' })).status, 405)
  })

  test('build logs (nix log) are passed through from the first upstream that has one', async () => {
    const deriver = (await readCacheNarInfo(dir1, paths.app)).deriver!
    await mkdir(join(dir2, 'log'), { recursive: true })
    await writeFile(join(dir2, 'log', deriver), 'building app\nok\n')
    const res = await fetch(`${narthex.url}/log/${deriver}`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'building app\nok\n')
    assert.equal((await fetch(`${narthex.url}/log/${'0'.repeat(32)}-nothing.drv`)).status, 404)
    assert.equal((await rawRequest(narthex.url, '/log/../../etc/passwd')).status, 400)
  })

  test('after the upstreams stop, a fresh client still gets everything fetched; a never-fetched path is 503', async () => {
    await up1.close()
    await up2.close()
    const { store } = await nix.substitute(narthex.url, [paths.app, paths.only2], [narthex.publicKey])
    await nix.verifyPath(store, paths.app)
    await nix.verifyPath(store, paths.only2)
    const res = await fetch(`${narthex.url}/${hashPartOf(paths.big)}.narinfo`)
    assert.equal(res.status, 503)
    assert.ok(Number(res.headers.get('retry-after')) > 0)
  })

  test('a restart serves everything stored before, with no upstream reachable', async () => {
    assert.equal(await narthex.stop('SIGTERM'), 0)
    await narthex.restart()
    const { store } = await nix.substitute(narthex.url, [paths.app], [narthex.publicKey])
    await nix.verifyPath(store, paths.app)
  })
})

describe('an upstream serving a NAR that does not match its signed NarHash', { skip }, () => {
  let bad: StaticServer
  let good: StaticServer
  let narthex: NarthexProcess

  before(async () => {
    const badDir = nix.freshDir('bad')
    await cp(dir1, badDir, { recursive: true })
    // Valid xz, valid NAR, right FileHash and FileSize: only the NarHash can tell.
    await tamperNar(badDir, paths.app, 'app', 'evl')
    bad = await startStaticServer(badDir)
    good = await startStaticServer(dir1)
    narthex = await NarthexProcess.start({
      upstreams: [upstream('bad', bad, key1), upstream('good', good, key1)],
      rules: [{ match: '*', upstreams: ['bad', 'good'], minSignatures: 1 }],
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await bad?.close()
    await good?.close()
  })

  test('narthex keeps nothing, the client gets no clean copy, and the good copy is served next', async () => {
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.app)}.narinfo`)).text())
    const first = await fetch(`${narthex.url}/${info.url}`)
    assert.equal(first.status, 200)
    await assert.rejects(first.arrayBuffer(), 'the body must be cut off, never completed')
    const logged = await narthex.waitForLog('NAR failed verification')
    assert.equal(logged.length, 1)
    assert.equal(logged[0].code, 'HASH_MISMATCH')
    assert.deepEqual(await narFiles(narthex.dataDir), [])

    const second = await fetch(`${narthex.url}/${info.url}`)
    assert.equal(second.status, 200)
    const body = Buffer.from(await second.arrayBuffer())
    assert.ok(body.equals(await readFile(join(dir1, (await readCacheNarInfo(dir1, paths.app)).url))))
    assert.equal(good.count('/nar/'), 1)
    const { store } = await nix.substitute(narthex.url, [paths.app], [narthex.publicKey])
    await nix.verifyPath(store, paths.app)
    assert.deepEqual((await narFiles(narthex.dataDir)).length, 3)
  })
})

describe('a cold NAR under load and under a crash', { skip }, () => {
  let up: StaticServer
  let narthex: NarthexProcess
  let bigUrl: string
  let bigBytes: Buffer

  before(async () => {
    // 24 MiB at 16 MiB/s: the download lasts long enough to overlap requests and to be killed.
    up = await startStaticServer(dir1, { throttleBytesPerSec: 16 * 1024 * 1024 })
    narthex = await NarthexProcess.start({
      upstreams: [upstream('up', up, key1)],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
    })
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.big)}.narinfo`)).text())
    bigUrl = `${narthex.url}/${info.url}`
    bigBytes = await readFile(join(dir1, (await readCacheNarInfo(dir1, paths.big)).url))
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
  })

  test('SIGKILL mid-download, then restart: no partial NAR is ever served and it is fetched again correctly', async () => {
    const res = await fetch(bigUrl)
    const reader = res.body!.getReader()
    let got = 0
    while (got < 4 * 1024 * 1024) got += ((await reader.read()).value as Uint8Array).length
    assert.equal(await narthex.stop('SIGKILL'), null)
    await assert.rejects(async () => {
      for (;;) if ((await reader.read()).done) break
    })
    assert.deepEqual(await narFiles(narthex.dataDir), [])
    assert.ok((await readdir(join(narthex.dataDir, 'tmp'))).length > 0, 'the crash left a temp file')
    await narthex.restart()
    assert.deepEqual(await readdir(join(narthex.dataDir, 'tmp')), [], 'temp files are cleaned at start')
    const again = Buffer.from(await (await fetch(bigUrl)).arrayBuffer())
    assert.ok(again.equals(bigBytes))
    assert.equal(up.count(`/nar/`), 2)
  })

  test('50 concurrent requests for one cold NAR: one upstream download, 50 correct copies', async () => {
    // A fresh narthex, so the NAR is cold again.
    await narthex.cleanup()
    narthex = await NarthexProcess.start({
      upstreams: [upstream('up', up, key1)],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
    })
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.big)}.narinfo`)).text())
    up.requests.length = 0
    const bodies = await Promise.all(
      Array.from({ length: 50 }, async () => Buffer.from(await (await fetch(`${narthex.url}/${info.url}`)).arrayBuffer())),
    )
    assert.equal(up.count('/nar/'), 1)
    for (const b of bodies) assert.ok(b.equals(bigBytes))
  })
})

describe('sources found after admission', { skip }, () => {
  let first: StaticServer
  let second: StaticServer
  let narthex: NarthexProcess
  let secondDown = true
  let firstLostNars = false

  before(async () => {
    first = await startStaticServer(dir1)
    first.fault = (req) => (firstLostNars && req.url?.startsWith('/nar/') ? { kind: 'status', status: 404 } : undefined)
    second = await startStaticServer(dir1)
    second.fault = () => (secondDown ? { kind: 'status', status: 500 } : undefined)
    narthex = await NarthexProcess.start({
      upstreams: [upstream('first', first, key1), upstream('second', second, key1)],
      rules: [{ match: '*', upstreams: ['first', 'second'], minSignatures: 1 }],
      prefetch: { references: false },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await first?.close()
    await second?.close()
  })

  test('an upstream that was down at admission becomes a source when the first one loses the NAR', async () => {
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.libb)}.narinfo`)).text())
    secondDown = false
    firstLostNars = true
    const res = await fetch(`${narthex.url}/${info.url}`)
    assert.equal(res.status, 200)
    const body = Buffer.from(await res.arrayBuffer())
    assert.ok(body.equals(await readFile(join(dir1, (await readCacheNarInfo(dir1, paths.libb)).url))))
    assert.equal(second.count('/nar/'), 1)
    assert.equal((await narthex.waitForLog('found new sources')).length, 1)
  })
})
