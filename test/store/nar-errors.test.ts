/**
 * classifyNarError: one meaning per fault, for downloads, the verification threads and
 * `narthex verify`. Errors come from the real sources where they can (a pipeline aborted by its
 * signal, a file that is not there, a corrupt gzip stream).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import { NarthexError } from '../../src/errors.js'
import { classifyNarError, isUncheckable } from '../../src/store/index.js'

const shutdown = new NarthexError('SHUTTING_DOWN', 'narthex is shutting down')

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => assert.fail('expected a failure'),
    (err: unknown) => err,
  )
}

test('an abort is its reason, never corrupt data: through the signal, or the AbortError a pipeline throws', async () => {
  const ac = new AbortController()
  const running = failure(pipeline(new PassThrough(), new Writable({ write: (_c, _e, cb) => cb() }), { signal: ac.signal }))
  ac.abort(shutdown)
  const err = await running
  assert.equal((err as Error).name, 'AbortError')
  assert.equal(classifyNarError(err), shutdown, 'the AbortError carries its reason')
  assert.equal(classifyNarError(err, { upstream: 'up', signal: ac.signal }), shutdown)
  // Once the work's signal is aborted, whatever fails after it is the abort's doing.
  assert.equal(classifyNarError(new Error('terminated'), { upstream: 'up', signal: ac.signal }), shutdown)
  assert.equal(classifyNarError(new NarthexError('HASH_MISMATCH', 'x'), { signal: ac.signal }), shutdown)
  const bare = new AbortController()
  bare.abort()
  assert.equal(classifyNarError(new Error('x'), { signal: bare.signal }).code, 'SHUTTING_DOWN')
})

test('disk faults are STORE_IO, HTTP client faults are the upstream’s, anything else is a corrupt NAR', async () => {
  const missing = await failure(pipeline(createReadStream('/nonexistent/narthex.nar'), new PassThrough()))
  assert.equal(classifyNarError(missing, { file: '/nonexistent/narthex.nar' }).code, 'STORE_IO')
  assert.equal(classifyNarError(Object.assign(new Error('no space'), { code: 'ENOSPC' }), { upstream: 'up' }).code, 'STORE_IO')
  assert.equal(classifyNarError(Object.assign(new Error('body timeout'), { code: 'UND_ERR_BODY_TIMEOUT' }), { upstream: 'up' }).code, 'UPSTREAM_TIMEOUT')
  const broke = classifyNarError(Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }), { upstream: 'up' })
  assert.equal(broke.code, 'UPSTREAM_UNAVAILABLE')
  assert.deepEqual(broke.detail, { upstream: 'up' })
  const corrupt = await failure(pipeline([Buffer.from('not gzip at all')], createGunzip(), new PassThrough()))
  assert.equal(classifyNarError(corrupt, { file: 'x.nar.gz' }).code, 'NAR_INVALID')
  const own = new NarthexError('SIZE_MISMATCH', 'too long')
  assert.equal(classifyNarError(own, { upstream: 'up' }), own)
})

test('only a missing decoder makes a NAR uncheckable', () => {
  assert.equal(isUncheckable(new NarthexError('COMPRESSION_UNSUPPORTED', 'no lzip')), true)
  for (const code of ['NAR_INVALID', 'HASH_MISMATCH', 'SIZE_MISMATCH', 'STORE_IO'] as const) assert.equal(isUncheckable(new NarthexError(code, 'x')), false)
})
