/**
 * The protocol core against real Nix output (test/fixtures/nix, made by
 * scripts/gen-fixtures.sh with Nix 2.8): NARs from `nix-store --dump`, narinfos
 * from `nix copy --to file://` in each compression, signatures from `nix store sign`.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  formatNarInfo,
  formatNixHash,
  NarSink,
  parseNarInfo,
  parseNixHash,
  parsePublicKey,
  sha256Of,
  validSigners,
} from '../../src/protocol/index.js'
import { createDecompressor } from '../../src/store/index.js'

const FIX = new URL('../fixtures/nix/', import.meta.url)
const read = (p: string) => readFileSync(new URL(p, FIX))
const paths = JSON.parse(read('paths.json').toString()) as Record<string, { storePath: string; narHash: string; narSize: number; references: string[]; nar: string }>
const key = parsePublicKey(read('keys/fixture-1.pub').toString())

test('NARs dumped by nix-store hash to the NarHash Nix reports, through the streaming parser', async () => {
  for (const [name, p] of Object.entries(paths)) {
    const nar = read(p.nar)
    const sink = new NarSink({ hash: parseNixHash(p.narHash), size: p.narSize })
    await pipeline(Readable.from([nar.subarray(0, 100), nar.subarray(100)]), sink)
    assert.equal(formatNixHash(sink.result!.hash), p.narHash, name)
    assert.ok(sink.stats.symlinks >= 1 && sink.stats.executables >= 1, `${name} covers symlinks and executables`)
  }
})

for (const compression of ['xz', 'zstd', 'bzip2', 'none']) {
  test(`nix copy --to file:// (${compression}): narinfos round-trip, signatures verify, NARs decompress to the NarHash`, async () => {
    const dir = new URL(`cache-${compression}/`, FIX)
    const files = readdirSync(dir).filter((f) => f.endsWith('.narinfo'))
    assert.equal(files.length, Object.keys(paths).length)
    for (const f of files) {
      const text = readFileSync(new URL(f, dir), 'utf8')
      const info = parseNarInfo(text)
      assert.equal(formatNarInfo(info), text, `${f} formats byte-identically`)
      assert.equal(info.compression, compression)
      assert.deepEqual(validSigners(info, [key]), ['fixture-1'], `${f} carries a valid nix store sign signature`)
      const expected = Object.values(paths).find((p) => p.storePath.endsWith(info.storePath.name))!
      assert.equal(formatNixHash(info.narHash), expected.narHash)
      const file = readFileSync(new URL(info.url, dir))
      assert.equal(file.length, info.fileSize)
      assert.equal(formatNixHash(sha256Of(file)), formatNixHash(info.fileHash!))
      // Both decoders: a child process (size unknown or large) and in-process (small file).
      for (const size of [undefined, info.fileSize]) {
        const sink = new NarSink({ hash: info.narHash, size: info.narSize })
        await pipeline(Readable.from([file]), createDecompressor(compression, size), sink)
        assert.equal(sink.result?.size, info.narSize)
      }
    }
  })
}

test('corrupt compressed data fails with an error, not a wrong hash or a hang', async () => {
  for (const compression of ['xz', 'zstd', 'bzip2']) {
    const dir = new URL(`cache-${compression}/`, FIX)
    const f = readdirSync(dir).find((x) => x.endsWith('.narinfo'))!
    const info = parseNarInfo(readFileSync(new URL(f, dir), 'utf8'))
    const file = Buffer.from(readFileSync(new URL(info.url, dir)))
    file[Math.floor(file.length / 2)] ^= 0xff
    for (const size of [undefined, file.length]) {
      const sink = new NarSink({ hash: info.narHash, size: info.narSize })
      await assert.rejects(pipeline(Readable.from([file]), createDecompressor(compression, size), sink), compression)
    }
  }
})
