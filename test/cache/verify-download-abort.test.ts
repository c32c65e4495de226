/**
 * A NAR download (with its verification thread) aborted for shutdown while the upstream is still
 * sending: it fails with SHUTTING_DOWN, the reason it was given, not as bad data (NAR_INVALID),
 * and leaves no temp file. A real upstream (test/helpers/static-server.ts, trickling) and a real
 * store on disk.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createCipheriv, createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NarthexError, isNarthexError } from '../../src/errors.js'
import { encodeNix32, formatNixHash, narFileName, parseNarInfo, sha256Hash } from '../../src/protocol/index.js'
import { Store, stopVerifyThreads } from '../../src/store/index.js'
import { Upstream } from '../../src/upstream/index.js'
// Through the module itself: NarDownload is not part of cache/index.ts.
import { NarDownload } from '../../src/cache/nar-download.js'
import { writeNar } from '../helpers/nar-writer.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const dir = mkdtempSync(join(tmpdir(), 'narthex-download-abort-'))
let up: StaticServer
let store: Store
let upstream: Upstream

before(async () => {
  mkdirSync(join(dir, 'cache', 'nar'), { recursive: true })
  up = await startStaticServer(join(dir, 'cache'))
  up.fault = () => ({ kind: 'trickle', bytesPerSecond: 256 * 1024 })
  ;({ store } = await Store.open(join(dir, 'data')))
  upstream = new Upstream({ name: 'up', url: up.url, timeoutMs: 10_000, retries: 0, maxConnections: 4, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 1000 })
})

after(async () => {
  await upstream?.close()
  await up?.close()
  await store?.close()
  await stopVerifyThreads()
  rmSync(dir, { recursive: true, force: true })
})

test('a download aborted for shutdown mid-body fails with SHUTTING_DOWN, not NAR_INVALID', async () => {
  const nar = writeNar({ type: 'regular', contents: createCipheriv('aes-128-ctr', Buffer.alloc(16, 3), Buffer.alloc(16)).update(Buffer.alloc(2 << 20)) })
  const narHash = sha256Hash(createHash('sha256').update(nar).digest())
  const fileName = narFileName(encodeNix32(narHash.digest), 'none')
  writeFileSync(join(dir, 'cache', 'nar', fileName), nar)
  const info = parseNarInfo(
    [
      `StorePath: /nix/store/${'a'.repeat(32)}-big`,
      `URL: nar/${fileName}`,
      'Compression: none',
      `FileHash: ${formatNixHash(narHash)}`,
      `FileSize: ${nar.length}`,
      `NarHash: ${formatNixHash(narHash)}`,
      `NarSize: ${nar.length}`,
      'References: ',
      '',
    ].join('\n'),
  )
  const download = new NarDownload(fileName, info, `${up.url}/nar/${fileName}`, upstream, store)
  while (download.written < 64 * 1024 && download.state === 'running') await new Promise((r) => download.once('progress', r))
  assert.equal(download.state, 'running', download.error?.message)
  download.abort(new NarthexError('SHUTTING_DOWN', 'narthex is shutting down'))
  await assert.rejects(download.done, (err: unknown) => {
    assert.ok(isNarthexError(err), String(err))
    assert.equal(err.code, 'SHUTTING_DOWN', err.message)
    return true
  })
  assert.equal(download.error?.code, 'SHUTTING_DOWN')
  assert.deepEqual(readdirSync(join(dir, 'data', 'tmp')), [], 'the temp file is removed')
  assert.equal(await store.getNarFile(fileName), undefined, 'nothing stored')
})
