/**
 * The verification threads against NAR files written by real Nix (test/fixtures/nix), fed
 * to them as a download would: the file grows on disk while the thread follows it.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { createCipheriv } from 'node:crypto'
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatNixHash, parseNarInfo, sha256Of, type NarInfo } from '../../src/protocol/index.js'
import { GROW_STEP, Verification } from '../../src/store/verifier.js'
import { stopVerifyThreads } from '../../src/store/index.js'
import { isNarthexError } from '../../src/errors.js'
import { writeNar } from '../helpers/nar-writer.js'

const hasXz = spawnSync('xz', ['--version'], { stdio: 'ignore' }).status === 0
if (!hasXz && process.env.CI === 'true') throw new Error('the xz command is required in CI: apt-get install -y xz-utils')
const needsXz = hasXz ? {} : { skip: 'SKIPPED: the xz command is not installed (apt-get install -y xz-utils)' }
if (!hasXz) process.stderr.write(`${needsXz.skip}\n`)

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

/** Deterministic bytes that do not compress (AES-CTR of zeros). */
function incompressible(bytes: number, seed = 0): Buffer {
  return createCipheriv('aes-128-ctr', Buffer.alloc(16, seed), Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

/** The narinfo values of an uncompressed NAR file. */
function plainInfo(nar: Buffer): NarInfo {
  const hash = sha256Of(nar)
  return { ...cacheEntries('none')[0]!.info, compression: 'none', fileHash: hash, fileSize: nar.length, narHash: hash, narSize: nar.length }
}

test('verification thread: a file larger than GROW_STEP, followed as it grows', async () => {
  const nar = writeNar({ type: 'regular', contents: incompressible(3 * GROW_STEP + 12345) })
  const info = plainInfo(nar)
  const path = join(dir, `f${counter++}`)
  writeFileSync(path, '')
  const v = new Verification({ path, compression: 'none', fileSize: nar.length, fileHash: formatNixHash(info.fileHash!), narHash: formatNixHash(info.narHash), narSize: nar.length, single: true })
  // Pieces of 1 MiB, as a download writes them; the thread hears of them in GROW_STEPs.
  const piece = 1024 * 1024
  let written = 0
  let followed = false
  while (written < nar.length) {
    appendFileSync(path, nar.subarray(written, written + piece))
    written = Math.min(nar.length, written + piece)
    v.grow(written)
    if (!followed && written >= 2 * GROW_STEP) {
      // As a download waits on its verification: the thread has read most of what is written,
      // before the file is complete.
      await v.caughtUp(written, GROW_STEP)
      assert.equal(v.settled, false, 'the verification follows the file, it has not ended')
      followed = true
    }
    await new Promise((r) => setImmediate(r))
  }
  assert.ok(followed)
  v.end(written)
  const r = await v.result
  assert.equal(r.narSize, nar.length)
  assert.equal(r.narHash, formatNixHash(info.narHash))
  assert.equal(r.fileSize, nar.length)

  // A file cut short of its FileSize does not verify, however far it was followed.
  await assert.rejects(feed(info, nar.subarray(0, nar.length - 1), { single: true }, 5), (err: unknown) => isNarthexError(err) && ['NAR_INVALID', 'SIZE_MISMATCH'].includes(err.code))
})

test('verifying a 40 MiB xz NAR, as a download does and offline, leaks no listeners (no MaxListenersExceededWarning)', needsXz, async () => {
  // 40 MiB of incompressible NAR contents, so the file is 40 MiB of xz too, fed to the decoder
  // in 40 writes that each wait for it to drain. Compressing 40 MiB takes xz long: the NAR is
  // compressed as concatenated xz streams (valid xz, decoded in one pass by `xz -dc`), its
  // repeated 1 MiB block compressed once.
  const block = incompressible(1024 * 1024, 1)
  const blocks = 40
  const nar = writeNar({ type: 'regular', contents: Buffer.concat(Array.from({ length: blocks }, () => block)) })
  const start = nar.indexOf(block)
  const xz = (b: Buffer) => execFileSync('xz', ['-0', '-T1', '-c'], { input: b, maxBuffer: 1 << 30 })
  const blockXz = xz(block)
  const file = Buffer.concat([xz(nar.subarray(0, start)), ...Array.from({ length: blocks }, () => blockXz), xz(nar.subarray(start + blocks * block.length))])
  const path = join(dir, 'big.nar.xz')
  writeFileSync(path, file)
  const spec = { path, compression: 'xz', fileHash: formatNixHash(sha256Of(file)), fileSize: file.length, narHash: formatNixHash(sha256Of(nar)), narSize: nar.length, single: false }
  // A process of its own: warnings (the verification thread's too) go to its stderr.
  const verifier = new URL('../../src/store/verifier.ts', import.meta.url).href
  const check = new URL('../../src/store/nar-check.ts', import.meta.url).href
  const script = `
    const spec = ${JSON.stringify(spec)}
    const { Verification, stopVerifyThreads } = await import(${JSON.stringify(verifier)})
    const v = new Verification(spec)
    v.end(spec.fileSize)
    const thread = await v.result
    await stopVerifyThreads()
    const { checkNarFile } = await import(${JSON.stringify(check)})
    const { parseNixHash } = await import(${JSON.stringify(new URL('../../src/protocol/index.ts', import.meta.url).href)})
    const offline = await checkNarFile({ ...spec, fileHash: parseNixHash(spec.fileHash), narHash: parseNixHash(spec.narHash) })
    console.log(JSON.stringify({ thread: thread.narSize, offline: offline.nar.size }))
  `
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 })
  assert.equal(r.status, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), { thread: nar.length, offline: nar.length })
  assert.doesNotMatch(r.stderr, /MaxListenersExceededWarning/)
  assert.equal(r.stderr, '', 'nothing on stderr')
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
