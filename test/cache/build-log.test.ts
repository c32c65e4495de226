/**
 * Build logs (`nix log`) through the Cache facade, against fake upstreams (the static server)
 * and a real Store in a temporary directory. Each test names what broke when it fails.
 */
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { text } from 'node:stream/consumers'
import { after, afterEach, test } from 'node:test'
import { stopVerifyThreads } from '../../src/store/index.js'
import { addToCache, fakePath, startCache, type CacheUnderTest } from '../helpers/fake-cache.js'

let t: CacheUnderTest | undefined
afterEach(async () => {
  await t?.close()
  t = undefined
})
after(() => stopVerifyThreads())

const DRV = `${'1'.repeat(32)}-hello-1.0.drv`

async function addLog(dir: string, drv: string, body: string): Promise<void> {
  await mkdir(join(dir, 'log'), { recursive: true })
  await writeFile(join(dir, 'log', drv), body)
}

test('a build log is streamed from the first upstream that has it', async () => {
  t = await startCache({ upstreams: ['first', 'second'] })
  const [, second] = t.fakes
  await addLog(second.dir, DRV, 'building hello\n')
  const answer = await t.cache.getLog(DRV)
  assert.equal(answer.kind, 'streaming', 'a log the second upstream has was not found')
  assert.equal(answer.kind === 'streaming' && (await text(answer.stream)), 'building hello\n')
  assert.deepEqual(await t.cache.getLog(`${'2'.repeat(32)}-other.drv`), { kind: 'absent' })
})

test('a log endpoint that fails is unavailable (503), not absent', async () => {
  t = await startCache()
  const [up] = t.fakes
  up.server.fault = (req) => (req.url?.startsWith('/log/') ? { kind: 'status', status: 500 } : undefined)
  assert.equal((await t.cache.getLog(DRV)).kind, 'unavailable', 'a failing log endpoint was answered as absent')
})

test('regression: an upstream whose /log fails repeatedly still serves narinfos and NARs (log failures do not mark it down)', async () => {
  t = await startCache({ upstream: { failureThreshold: 2, timeoutMs: 300 } })
  const [up] = t.fakes
  const p = fakePath('after-logs-1.0', 'still here\n', up.key)
  await addToCache(up.dir, p)
  await addLog(up.dir, DRV, 'log\n')

  up.server.fault = (req) => (req.url?.startsWith('/log/') ? { kind: 'status', status: 500 } : undefined)
  for (let i = 0; i < 3; i++) assert.equal((await t.cache.getLog(DRV)).kind, 'unavailable')
  up.server.fault = (req) => (req.url?.startsWith('/log/') ? { kind: 'hang' } : undefined)
  for (let i = 0; i < 2; i++) assert.equal((await t.cache.getLog(DRV)).kind, 'unavailable')

  assert.equal(t.upstreams[0].isDown, false, 'failed build-log requests marked the upstream down')
  assert.equal(t.upstreams[0].health().consecutiveFailures, 0, 'failed build-log requests counted against the upstream\'s health')
  assert.equal((await t.cache.getNarInfo(p.hashPart)).kind, 'found', 'narinfo traffic was refused after /log failures')
  const nar = await t.cache.getNar(p.fileName)
  assert.ok(nar.kind === 'following' || nar.kind === 'stored', `NAR traffic was refused after /log failures: ${nar.kind}`)
  if (nar.kind === 'following') await nar.follower.completed()
  assert.ok((await readFile(t.store.narPath(p.fileName))).equals(p.nar))
})
