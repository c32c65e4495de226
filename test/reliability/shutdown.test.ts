/**
 * SIGTERM while a NAR is being downloaded: the download is abandoned as a shutdown, not as bad
 * data. No `nar-rejected` audit entry, no "NAR failed verification" log line (which would also
 * block the source and count a failure against the upstream), and the NAR is fetched and served
 * whole after the restart.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo } from '../../src/protocol/index.js'
import { getOnce } from '../helpers/http.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

// 4 MiB at 512 KiB/s: the download is surely under way when the signal comes, and far from done.
const NAR_BYTES = 4 * 1024 * 1024
const RATE = 512 * 1024

describe('SIGTERM during a NAR download', { skip }, () => {
  let nix: NixEnv
  let up: StaticServer
  let narthex: NarthexProcess
  let storePath: string

  before(async () => {
    nix = await NixEnv.create()
    const paths = await nix.buildClosure({ big: { bigBytes: NAR_BYTES } })
    storePath = paths.big!
    const key = await nix.genKey('up-1')
    await nix.sign(key.secretFile, [storePath])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [storePath])
    up = await startStaticServer(dir)
    up.fault = (req) => (req.url?.startsWith('/nar/') ? { kind: 'trickle', bytesPerSecond: RATE } : undefined)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: up.url, publicKeys: [key.publicKey], retries: 0 }],
      log: { level: 'info' },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  test('is a shutdown: not audited as a rejected NAR, not logged as a verification failure', async () => {
    const ni = await getOnce(`${narthex.url}/${hashPartOf(storePath)}.narinfo`)
    assert.equal(ni.status, 200)
    const info = parseNarInfo(ni.body.toString('utf8'))

    // A client follows the download; once it has bytes, the download is surely under way.
    let received = 0
    const client = request(`${narthex.url}/${info.url}`, { agent: false })
    const cut = new Promise<void>((resolve) => client.once('close', () => resolve()))
    const started = new Promise<void>((resolve, reject) => {
      client.once('error', () => resolve())
      client.once('response', (res) => {
        if (res.statusCode !== 200) reject(new Error(`NAR answered ${res.statusCode}`))
        res.on('data', (c: Buffer) => {
          received += c.length
          if (received >= 64 * 1024) resolve()
        })
        res.on('error', () => undefined)
      })
    })
    client.end()
    await started
    assert.ok(received >= 64 * 1024 && received < (info.fileSize ?? Infinity), `the client got ${received} bytes before the signal`)

    assert.equal(await narthex.stop('SIGTERM'), 0)
    await cut
    assert.deepEqual(narthex.logged('NAR failed verification'), [], 'the aborted download is not logged as bad data')
    const audit = await readFile(join(narthex.dataDir, 'audit.log'), 'utf8').catch(() => '')
    const rejected = audit.split('\n').filter((l) => l.includes('"nar-rejected"'))
    assert.deepEqual(rejected, [], 'no nar-rejected audit entry for a shutdown')

    // After the restart the NAR is fetched again and served whole.
    up.fault = undefined
    await narthex.restart()
    const nar = await getOnce(`${narthex.url}/${info.url}`)
    assert.equal(nar.status, 200)
    assert.ok(nar.complete)
    assert.equal(nar.body.length, info.fileSize)
    assert.deepEqual(narthex.logged('NAR failed verification'), [])
  })
})
