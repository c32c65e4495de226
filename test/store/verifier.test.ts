/**
 * The verification threads against NAR files written by real Nix (test/fixtures/nix), fed
 * to them as a download would: the file grows on disk while the thread follows it.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatNixHash, parseNarInfo, type NarInfo } from '../../src/protocol/index.js'
import { GROW_STEP, Verification } from '../../src/store/verifier.js'
import { stopVerifyThreads } from '../../src/store/index.js'
import { isNarthexError } from '../../src/errors.js'

const FIX = new URL('../fixtures/nix/', import.meta.url)
const dir = mkdtempSync(join(tmpdir(), 'narthex-verifier-'))
after(async () => {
  await stopVerifyThreads()
  rmSync(dir, { recursive: true, force: true })
})

function cacheEntries(compression: string): Array<{ info: NarInfo; file: Buffer }> {
  const cache = new URL(`cache-${compression}/`, FIX)
  return readdirSync(cache)
    .filter((n) => n.endsWith('.narinfo'))
    .map((n) => {
      const info = parseNarInfo(readFileSync(new URL(n, cache), 'utf8'))
      return { info, file: readFileSync(new URL(info.url, cache)) }
    })
}

let counter = 0
/** Writes `file` to a temp file piece by piece, telling the verification as a download does. */
async function feed(info: NarInfo, file: Buffer, overrides: Partial<ConstructorParameters<typeof Verification>[0]> = {}, pieces = 3) {
  const path = join(dir, `f${counter++}`)
  writeFileSync(path, '')
  const v = new Verification({
    path,
    compression: info.compression,
    fileHash: info.fileHash ? formatNixHash(info.fileHash) : undefined,
    fileSize: info.fileSize,
    narHash: formatNixHash(info.narHash),
    narSize: info.narSize,
    single: false,
    ...overrides,
  })
  const step = Math.ceil(file.length / pieces)
  let written = 0
  for (let i = 0; i < file.length; i += step) {
    appendFileSync(path, file.subarray(i, i + step))
    written = Math.min(file.length, i + step)
    v.grow(written)
    await new Promise((r) => setImmediate(r))
  }
  v.end(written)
  return v.result
}

for (const compression of ['xz', 'zstd', 'bzip2', 'none']) {
  test(`verification thread: ${compression} NARs written by nix verify to their narinfo`, async () => {
    for (const { info, file } of cacheEntries(compression)) {
      const r = await feed(info, file)
      assert.equal(r.narHash, formatNixHash(info.narHash))
      assert.equal(r.narSize, info.narSize)
      assert.equal(r.fileSize, file.length)
      if (info.fileHash) assert.equal(r.fileHash, formatNixHash(info.fileHash))
    }
  })
}

test('verification thread: an uncompressed NAR is hashed once, its FileHash is its NarHash', async () => {
  for (const { info, file } of cacheEntries('none')) {
    const r = await feed(info, file, { single: true, fileHash: undefined })
    assert.equal(r.fileHash, formatNixHash(info.narHash))
    assert.equal(r.fileSize, info.narSize)
  }
})

test('verification thread: damaged bytes, wrong sizes and hashes fail with the right code', async () => {
  const [{ info, file }] = cacheEntries('xz')
  const expectCode = async (what: string, p: Promise<unknown>, codes: string[]) => {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(isNarthexError(err), `${what}: ${String(err)}`)
      assert.ok(codes.includes(err.code), `${what}: ${err.code} ${err.message}`)
      return true
    })
  }
  const flipped = Buffer.from(file)
  flipped[Math.floor(file.length / 2)]! ^= 0x40
  await expectCode('a flipped byte', feed(info!, flipped), ['HASH_MISMATCH', 'NAR_INVALID'])
  await expectCode('flipped, no FileHash', feed(info!, flipped, { fileHash: undefined, fileSize: undefined }), ['HASH_MISMATCH', 'NAR_INVALID'])
  // A truncated xz file can still decode to the whole NAR: the decoder's exit status must count.
  await expectCode('truncated', feed(info!, file.subarray(0, file.length - 10), { fileHash: undefined, fileSize: undefined }), ['NAR_INVALID', 'SIZE_MISMATCH'])
  await expectCode('NarSize off by one', feed(info!, file, { narSize: info!.narSize - 1 }), ['SIZE_MISMATCH'])
  await expectCode('another NarHash', feed(info!, file, { narHash: formatNixHash({ ...info!.narHash, digest: Buffer.alloc(32, 7) }) }), ['HASH_MISMATCH'])
  await expectCode('the wrong decompressor', feed(info!, file, { compression: 'zstd' }), ['NAR_INVALID'])
  await expectCode('an unknown compression', feed(info!, file, { compression: 'rot13' }), ['COMPRESSION_UNSUPPORTED'])
  await expectCode('FileSize too small', feed(info!, file, { fileSize: file.length - 1 }), ['SIZE_MISMATCH'])
})

test('verification thread: abort ends a job that waits for bytes; many jobs at once', async () => {
  const [{ info }] = cacheEntries('xz')
  const path = join(dir, 'aborted')
  writeFileSync(path, '')
  const v = new Verification({ path, compression: 'xz', narHash: formatNixHash(info!.narHash), narSize: info!.narSize, single: false })
  v.abort()
  await assert.rejects(v.result, /aborted/)
  const all = [...cacheEntries('xz'), ...cacheEntries('zstd'), ...cacheEntries('bzip2'), ...cacheEntries('none')]
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => feed(all[i % all.length]!.info, all[i % all.length]!.file)))
  assert.equal(results.length, 40)
})

test('verification thread: a file larger than GROW_STEP, followed as it grows', async () => {
  const [{ info, file }] = cacheEntries('none').sort((a, b) => b.file.length - a.file.length)
  // Repeat the NAR's bytes? A NAR cannot be padded; instead check the step logic on the real file.
  const r = await feed(info!, file, {}, Math.max(3, Math.ceil(file.length / (GROW_STEP / 4))))
  assert.equal(r.narSize, info!.narSize)
})

test('verification threads are replaced after they stop', async () => {
  const [{ info, file }] = cacheEntries('zstd')
  await stopVerifyThreads()
  const r = await feed(info!, file)
  assert.equal(r.narHash, formatNixHash(info!.narHash))
})

test('idle verification threads do not keep the process alive', async () => {
  const { spawn } = await import('node:child_process')
  const module = new URL('../../src/store/verifier.ts', import.meta.url).href
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `const m = await import(${JSON.stringify(module)}); m.startVerifyThreads()`], {
    stdio: 'ignore',
  })
  const code = await Promise.race([
    new Promise((r) => child.once('exit', (c) => r(c))),
    new Promise((r) => setTimeout(() => r('still running after 15 s'), 15_000)),
  ])
  if (code === 'still running after 15 s') child.kill('SIGKILL')
  assert.equal(code, 0)
})
