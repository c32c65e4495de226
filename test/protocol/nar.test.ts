import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import fc from 'fast-check'
import {
  formatNixHash,
  NarParser,
  NarSink,
  parseNixHash,
  sha256Of,
  HashingPassThrough,
} from '../../src/protocol/index.js'
import { narString, writeNar, type NarNode } from '../helpers/nar-writer.js'

async function sink(data: Buffer, chunk = 7, expected = {}) {
  const chunks: Buffer[] = []
  for (let i = 0; i < data.length; i += chunk) chunks.push(data.subarray(i, i + chunk))
  const s = new NarSink(expected)
  await pipeline(Readable.from(chunks), s)
  return s
}

test('the docs/PROTOCOL.md vector: a regular file "hi\\n" is a 120-byte NAR with the known NarHash', async () => {
  const nar = writeNar({ type: 'regular', contents: 'hi\n' })
  assert.equal(nar.length, 120)
  for (const chunk of [1, 3, 8, 1000]) {
    const s = await sink(nar, chunk)
    assert.equal(s.result?.size, 120)
    assert.equal(formatNixHash(s.result.hash), 'sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h')
  }
})

test('expected hash and size are enforced: mismatch codes, early size failure', async () => {
  const nar = writeNar({ type: 'regular', contents: 'hi\n' })
  const hash = sha256Of(nar)
  await sink(nar, 16, { hash, size: 120 })
  await assert.rejects(sink(nar, 16, { hash: sha256Of(Buffer.from('x')), size: 120 }), { code: 'HASH_MISMATCH' })
  await assert.rejects(sink(nar, 16, { hash, size: 121 }), { code: 'SIZE_MISMATCH' })
  await assert.rejects(sink(nar, 16, { hash, size: 64 }), { code: 'SIZE_MISMATCH' })
})

const tree: NarNode = {
  type: 'directory',
  entries: [
    ['bin', { type: 'directory', entries: [['app', { type: 'regular', contents: '#!/bin/sh\n', executable: true }]] }],
    ['lib', { type: 'symlink', target: '../other/lib' }],
    ['share', { type: 'regular', contents: Buffer.alloc(100_000, 1) }],
  ],
}

test('a directory tree parses and its stats are counted', async () => {
  const s = await sink(writeNar(tree), 4096)
  assert.deepEqual(s.stats, { regularFiles: 2, executables: 1, symlinks: 1, directories: 2 })
})

test('hostile NARs are rejected with NAR_INVALID', () => {
  const good = writeNar(tree)
  const hugeLength = Buffer.concat([narString('nix-archive-1'), narString('('), narString('type'), Buffer.from('ffffffffffffff7f', 'hex')])
  const rows: Array<[string, Buffer]> = [
    ['bad magic', writeNar({ type: 'regular', contents: '' }).fill(0x41, 8, 9)],
    ['truncated', good.subarray(0, good.length - 3)],
    ['trailing bytes', Buffer.concat([good, Buffer.alloc(8)])],
    ['unsorted entries', writeNar({ type: 'directory', entries: [['b', { type: 'regular', contents: '' }], ['a', { type: 'regular', contents: '' }]] })],
    ['duplicate entries', writeNar({ type: 'directory', entries: [['a', { type: 'regular', contents: '' }], ['a', { type: 'regular', contents: '' }]] })],
    ['dot-dot name', writeNar({ type: 'directory', entries: [['..', { type: 'regular', contents: '' }]] })],
    ['dot name', writeNar({ type: 'directory', entries: [['.', { type: 'regular', contents: '' }]] })],
    ['slash in name', writeNar({ type: 'directory', entries: [['a/b', { type: 'regular', contents: '' }]] })],
    ['NUL in name', writeNar({ type: 'directory', entries: [['a\0', { type: 'regular', contents: '' }]] })],
    ['empty name', writeNar({ type: 'directory', entries: [['', { type: 'regular', contents: '' }]] })],
    ['overlong name', writeNar({ type: 'directory', entries: [['n'.repeat(5000), { type: 'regular', contents: '' }]] })],
    ['empty symlink target', writeNar({ type: 'symlink', target: '' })],
    ['unknown type', Buffer.concat([narString('nix-archive-1'), narString('('), narString('type'), narString('fifo'), narString(')')])],
    ['token length 2^63 (no allocation)', hugeLength],
    ['non-zero padding', Buffer.concat([narString('nix-archive-1'), narString('('), narString('type'), narString('regular'), narString('contents'), narString('abc', 1), narString(')')])],
  ]
  for (const [why, nar] of rows) {
    assert.throws(
      () => {
        const p = new NarParser()
        p.push(nar)
        p.end()
      },
      { code: 'NAR_INVALID' },
      why,
    )
  }
})

test('a deeply nested NAR is refused past the depth limit, not by stack overflow', () => {
  let node: NarNode = { type: 'regular', contents: 'x' }
  for (let i = 0; i < 300; i++) node = { type: 'directory', entries: [['d', node]] }
  assert.throws(() => new NarParser().push(writeNar(node)), { code: 'NAR_INVALID' })
})

test('NAR parser: arbitrary mutations of a valid NAR either parse or fail with NAR_INVALID (property)', () => {
  const good = writeNar(tree)
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 512 }),
      (edits, chunk) => {
        const bad = Buffer.from(good)
        for (const [at, v] of edits) bad[at] = v
        const p = new NarParser()
        try {
          for (let i = 0; i < bad.length; i += chunk) p.push(bad.subarray(i, i + chunk))
          p.end()
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'NAR_INVALID')
        }
      },
    ),
    { numRuns: 20000 },
  )
})

test('HashingPassThrough passes bytes unchanged and checks FileHash/FileSize', async () => {
  const data = Buffer.alloc(300_000, 7)
  const out: Buffer[] = []
  const t = new HashingPassThrough({ hash: sha256Of(data), size: data.length })
  await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), t, async (src) => {
    for await (const c of src) out.push(c as Buffer)
  })
  assert.ok(Buffer.concat(out).equals(data))
  assert.equal(t.result?.size, data.length)
  const wrong = new HashingPassThrough({ hash: parseNixHash(`sha256:${'0'.repeat(52)}`) })
  await assert.rejects(pipeline(Readable.from([data]), wrong, async (src) => { for await (const _ of src); }), { code: 'HASH_MISMATCH' })
})
