/**
 * xz decoding in-process (lzma-native, within an allowance counted at NarSize) and through the `xz`
 * child: which path a file takes, that each slot is released exactly once
 * (end, error, destroy), corrupt and truncated input, backpressure, and the
 * single-chunk `pipeline()` that lzma-native's own stream left hanging.
 * Real NARs come from test/fixtures/nix (Nix 2.8, `nix copy --to file://?compression=xz`).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseNarInfo, type NarInfo } from '../../src/protocol/index.js'
// Through the module itself: the slot counter is not part of store/index.ts.
import {
  createDecompressor,
  inProcessDecodersInUse,
  XZ_IN_PROCESS_MAX_BYTES,
  XZ_IN_PROCESS_MAX_DECODERS,
} from '../../src/store/decompress.js'
import { writeNar } from '../helpers/nar-writer.js'

// These tests compare the in-process decoder with the `xz` child, so they need the command.
// As with nix: in CI its absence is a failure, elsewhere a loud skip.
const hasXz = spawnSync('xz', ['--version'], { stdio: 'ignore' }).status === 0
if (!hasXz && process.env.CI === 'true') throw new Error('the xz command is required in CI: apt-get install -y xz-utils')
const XZ_SKIP = 'SKIPPED: the xz command is not installed (apt-get install -y xz-utils); the child-process path cannot be compared'
if (!hasXz) process.stderr.write(`${XZ_SKIP}\n`)
const needsXz = hasXz ? {} : { skip: XZ_SKIP }

const CACHE = new URL('../fixtures/nix/cache-xz/', import.meta.url)
const fixtures: Array<{ info: NarInfo; file: Buffer }> = readdirSync(CACHE)
  .filter((f) => f.endsWith('.narinfo'))
  .map((f) => {
    const info = parseNarInfo(readFileSync(new URL(f, CACHE), 'utf8'))
    return { info, file: readFileSync(new URL(info.url, CACHE)) }
  })

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

/** A NAR of one regular file, xz-compressed by the `xz` command at Nix's preset (6, one block). */
function xzNar(contents: Buffer): { nar: Buffer; xz: Buffer } {
  const nar = writeNar({ type: 'regular', contents })
  return { nar, xz: execFileSync('xz', ['-6', '-T1', '-c'], { input: nar, maxBuffer: 1 << 30 }) }
}

/** Deterministic bytes that do not compress (a sha256 chain). */
function incompressible(bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  let block = createHash('sha256').update('narthex').digest()
  for (let i = 0; i < bytes; i += 32) {
    block.copy(out, i)
    block = createHash('sha256').update(block).digest()
  }
  return out
}

/** Decodes `chunks` through `decoder`; resolves with the sha256 and size of the output. */
async function decode(decoder: Duplex, chunks: Iterable<Buffer>) {
  const hash = createHash('sha256')
  let size = 0
  await pipeline(
    Readable.from(chunks),
    decoder,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        hash.update(chunk)
        size += chunk.length
        cb()
      },
    }),
  )
  return { sha256: hash.digest('hex'), size }
}

/** Takes every in-process slot with decoders that wait for input; `release()` ends them. */
function holdAllSlots() {
  const held: Duplex[] = []
  for (let i = 0; i < XZ_IN_PROCESS_MAX_DECODERS; i++) held.push(createDecompressor('xz', 100))
  assert.equal(inProcessDecodersInUse(), XZ_IN_PROCESS_MAX_DECODERS)
  return {
    held,
    async release() {
      for (const d of held) d.destroy()
      await sleep(10)
      assert.equal(inProcessDecodersInUse(), 0)
    },
  }
}

const mid = hasXz ? xzNar(incompressible(128 * 1024)) : undefined

test('the fixtures decode to their NarSize in-process, holding one slot until the end', needsXz, async () => {
  for (const { info, file } of fixtures) {
    assert.ok(info.fileSize! <= XZ_IN_PROCESS_MAX_BYTES)
    const decoder = createDecompressor('xz', info.fileSize)
    assert.equal(inProcessDecodersInUse(), 1)
    let closed = false
    decoder.on('close', () => (closed = true))
    const out = await decode(decoder, [file])
    assert.equal(out.size, info.narSize)
    assert.equal(inProcessDecodersInUse(), 0)
    await sleep(0)
    assert.ok(closed, "the decoder emits 'close' after its end")
  }
})

test('a file of unknown size or above the threshold goes to the xz child', needsXz, async () => {
  const { info, file } = fixtures[0]
  for (const size of [undefined, XZ_IN_PROCESS_MAX_BYTES + 1]) {
    const decoder = createDecompressor('xz', size)
    assert.equal(inProcessDecodersInUse(), 0, String(size))
    assert.equal((await decode(decoder, [file])).size, info.narSize)
  }
})

test('beyond the bound, small files go to the xz child; a freed slot is used again', needsXz, async () => {
  const { info, file } = fixtures[0]
  const slots = holdAllSlots()
  const overflow = createDecompressor('xz', info.fileSize)
  assert.equal(inProcessDecodersInUse(), XZ_IN_PROCESS_MAX_DECODERS)
  assert.equal((await decode(overflow, [file])).size, info.narSize)
  assert.equal(inProcessDecodersInUse(), XZ_IN_PROCESS_MAX_DECODERS)

  // One slot freed by an ended decoder: the next small file takes it.
  const first = slots.held.shift()!
  assert.equal((await decode(first, [file])).size, info.narSize)
  assert.equal(inProcessDecodersInUse(), XZ_IN_PROCESS_MAX_DECODERS - 1)
  const again = createDecompressor('xz', info.fileSize)
  assert.equal(inProcessDecodersInUse(), XZ_IN_PROCESS_MAX_DECODERS)
  assert.equal((await decode(again, [file])).size, info.narSize)
  await slots.release()
})

test('small NARs of known NarSize decode in-process many at a time, not in xz children once two are busy', needsXz, async () => {
  // A cold closure verifies ten or more small NARs at once; an `xz` child costs each 4-6 ms of CPU.
  const { info, file } = fixtures[0]
  const many: Duplex[] = []
  try {
    for (let i = 0; i < 10; i++) many.push(createDecompressor('xz', info.fileSize, info.narSize))
    assert.equal(inProcessDecodersInUse(), 10)
    // The allowance counts NarSize, an unknown one as a whole dictionary: one more fits, a second goes to `xz`.
    const unknown = createDecompressor('xz', info.fileSize)
    many.push(unknown)
    assert.equal(inProcessDecodersInUse(), 11)
    const overflow = createDecompressor('xz', info.fileSize)
    assert.equal(inProcessDecodersInUse(), 11)
    assert.equal((await decode(overflow, [file])).size, info.narSize)
    for (const d of many) assert.equal((await decode(d, [file])).size, info.narSize)
    assert.equal(inProcessDecodersInUse(), 0)
  } finally {
    for (const d of many) d.destroy()
  }
})

test('corrupt and truncated input through the in-process path errors with NAR_INVALID and frees the slot once', needsXz, async () => {
  const { file } = fixtures[0]
  const flipped = Buffer.from(file)
  flipped[Math.floor(file.length / 2)] ^= 0xff
  const cases: Array<[string, Buffer[]]> = [
    ['a flipped byte', [flipped]],
    ['cut in the middle', [file.subarray(0, Math.floor(file.length / 2))]],
    ['without its last byte', [file.subarray(0, file.length - 1)]],
    ['empty', []],
    ['not xz at all', [Buffer.from('nix-archive-1')]],
    ['trailing garbage', [file, Buffer.from('garbage!')]],
  ]
  // Another decoder holds a slot throughout: a double release would show as 0.
  const other = createDecompressor('xz', 100)
  for (const [name, chunks] of cases) {
    const decoder = createDecompressor('xz', file.length)
    assert.equal(inProcessDecodersInUse(), 2, name)
    await assert.rejects(decode(decoder, chunks), (err: NodeJS.ErrnoException) => err.code === 'NAR_INVALID', name)
    await sleep(10)
    assert.equal(inProcessDecodersInUse(), 1, name)
  }
  other.destroy()
  assert.equal(inProcessDecodersInUse(), 0)
})

test('a corrupt file in the middle of a larger one errors in-process as through the xz child', needsXz, async () => {
  const bad = Buffer.from(mid!.xz)
  bad[Math.floor(bad.length / 2)] ^= 0x55
  for (const size of [bad.length, undefined]) {
    await assert.rejects(decode(createDecompressor('xz', size), [bad]), (err: NodeJS.ErrnoException) => err.code === 'NAR_INVALID')
    assert.equal(inProcessDecodersInUse(), 0)
  }
})

test('every child decoder errors on corrupt data, not only the NAR check after it', async () => {
  // The decoders write what they decoded up to the fault and exit non-zero after their stdout
  // ended; the stream must still fail, whoever consumes it.
  for (const [compression, cmd] of [['xz', 'xz'], ['zstd', 'zstd'], ['bzip2', 'bzip2']] as const) {
    if (spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status !== 0) continue
    const bad = Buffer.from(execFileSync(cmd, ['-c'], { input: mid?.nar ?? writeNar({ type: 'regular', contents: incompressible(128 * 1024) }) }))
    bad[Math.floor(bad.length / 2)] ^= 0x55
    await assert.rejects(decode(createDecompressor(compression), [bad]), (err: NodeJS.ErrnoException) => err.code === 'NAR_INVALID', compression)
  }
})

test('destroyed mid-stream, an in-process decoder frees its slot once, and late thread-pool results are dropped', needsXz, async () => {
  const other = createDecompressor('xz', 100)
  const decoder = createDecompressor('xz', mid!.xz.length)
  assert.equal(inProcessDecodersInUse(), 2)
  const errors: Error[] = []
  decoder.on('error', (e) => errors.push(e))
  let closes = 0
  decoder.on('close', () => closes++)
  decoder.write(mid!.xz.subarray(0, 64 * 1024))
  await new Promise((resolve) => decoder.once('readable', resolve))
  decoder.destroy()
  decoder.destroy()
  assert.equal(inProcessDecodersInUse(), 1)
  await sleep(50)
  assert.equal(inProcessDecodersInUse(), 1)
  assert.deepEqual(errors, [])
  assert.equal(closes, 1)
  other.destroy()
  assert.equal(inProcessDecodersInUse(), 0)
})

test('a destroyed pipeline (a consumer that fails) frees the slot', needsXz, async () => {
  const decoder = createDecompressor('xz', mid!.xz.length)
  assert.equal(inProcessDecodersInUse(), 1)
  const failing = new Writable({ write: (_c, _e, cb) => cb(new Error('consumer gave up')) })
  await assert.rejects(pipeline(Readable.from([mid!.xz]), decoder, failing), /consumer gave up/)
  assert.equal(inProcessDecodersInUse(), 0)
})

test('a whole file in one chunk settles pipeline(), with an array source too', needsXz, async () => {
  // lzma-native's own stream never settled this pipeline for single chunks over 16 KiB.
  assert.ok(mid!.xz.length > 64 * 1024 && mid!.xz.length <= XZ_IN_PROCESS_MAX_BYTES)
  for (const source of [() => [mid!.xz], () => Readable.from([mid!.xz])]) {
    const hash = createHash('sha256')
    await pipeline(source(), createDecompressor('xz', mid!.xz.length), async (out: AsyncIterable<Buffer>) => {
      for await (const chunk of out) hash.update(chunk)
    })
    assert.equal(hash.digest('hex'), sha256(mid!.nar))
  }
  assert.equal(inProcessDecodersInUse(), 0)
})

test('in-process and child decoders give the same bytes, in any chunking', needsXz, async () => {
  const expected = sha256(mid!.nar)
  for (const chunkSize of [1, 4095, 4096, 4097, 65536, mid!.xz.length]) {
    const chunks: Buffer[] = []
    // 1-byte chunks only for the first 3 KiB: enough to cross the stream header and a slice edge.
    const limit = chunkSize === 1 ? 3072 : mid!.xz.length
    for (let i = 0; i < limit; i += chunkSize) chunks.push(mid!.xz.subarray(i, Math.min(i + chunkSize, limit)))
    if (limit < mid!.xz.length) chunks.push(mid!.xz.subarray(limit))
    for (const size of [mid!.xz.length, undefined]) {
      const out = await decode(createDecompressor('xz', size), chunks)
      assert.equal(out.sha256, expected, `${chunkSize}-byte chunks, size ${size}`)
    }
  }
})

test('a decompression bomb is decoded slice by slice under backpressure, not all at once', needsXz, async () => {
  // 128 MiB of zeros: about 20 KB of xz, well under the threshold.
  const { nar, xz } = xzNar(Buffer.alloc(128 << 20))
  assert.ok(xz.length < XZ_IN_PROCESS_MAX_BYTES)
  const decoder = createDecompressor('xz', xz.length)
  assert.equal(inProcessDecodersInUse(), 1)
  let written = false
  decoder.write(xz, () => (written = true))
  decoder.end()
  // The first slice's output, however slow the thread pool is (the machine may be busy)…
  for (let waited = 0; decoder.readableLength === 0 && waited < 20_000; waited += 50) await sleep(50)
  // …then time for more, which must not come.
  await sleep(300)
  // Nobody reads: decoding stops after a slice (4 KiB of this file is 27 MB), the write is held.
  assert.ok(decoder.readableLength > 0 && decoder.readableLength < 48 << 20, `${decoder.readableLength} bytes buffered`)
  assert.equal(written, false)
  let size = 0
  const hash = createHash('sha256')
  for await (const chunk of decoder as AsyncIterable<Buffer>) {
    size += chunk.length
    hash.update(chunk)
  }
  assert.equal(size, nar.length)
  assert.equal(hash.digest('hex'), sha256(nar))
  assert.equal(inProcessDecodersInUse(), 0)
})

test('a decoder command that is gone when a NAR comes is COMPRESSION_UNSUPPORTED, not a corrupt NAR', () => {
  const bzip2 = spawnSync('sh', ['-c', 'command -v bzip2'], { encoding: 'utf8' }).stdout.trim()
  if (!bzip2) {
    if (process.env.CI === 'true') throw new Error('the bzip2 command is required in CI')
    return void process.stderr.write('SKIPPED: the bzip2 command is not installed\n')
  }
  // A process whose PATH holds only a link to bzip2: narthex finds the command, then it goes.
  const bin = mkdtempSync(join(tmpdir(), 'narthex-decoders-'))
  try {
    symlinkSync(bzip2, join(bin, 'bzip2'))
    const module = new URL('../../src/store/decompress.ts', import.meta.url).href
    const script = `
      import { unlinkSync } from 'node:fs'
      import { pipeline } from 'node:stream/promises'
      const { createDecompressor, supportedCompressions } = await import(${JSON.stringify(module)})
      if (!supportedCompressions().includes('bzip2')) throw new Error('bzip2 not found on PATH')
      unlinkSync(${JSON.stringify(join(bin, 'bzip2'))})
      try {
        await pipeline([Buffer.from('BZh91AY&SY')], createDecompressor('bzip2', 1 << 20), async (out) => { for await (const _ of out); })
        console.log('decoded')
      } catch (err) {
        console.log(err.code)
      }
    `
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, PATH: bin }, timeout: 60_000 })
    assert.equal(r.status, 0, r.stderr)
    assert.equal(r.stdout.trim(), 'COMPRESSION_UNSUPPORTED')
  } finally {
    rmSync(bin, { recursive: true, force: true })
  }
})
