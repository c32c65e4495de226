import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  COMPRESSION_EXTENSIONS,
  narFileName,
  narFileNameOf,
  narShardPath,
  parseNarFileName,
  parseNixHash,
  type Compression,
} from '../../src/protocol/index.js'

const NIX32 = '1094wph9z4nwlgvsd53abfz8i117ykiv5dwnq9nnhz846s7xqd7d'

test('NAR file names round-trip for every compression narthex knows', () => {
  for (const compression of Object.keys(COMPRESSION_EXTENSIONS) as Compression[]) {
    const name = narFileName(NIX32, compression)
    assert.deepEqual(parseNarFileName(name), { nix32: NIX32, compression }, name)
  }
  assert.equal(narFileName(NIX32, 'xz'), `${NIX32}.nar.xz`)
  assert.equal(narFileName(NIX32, 'none'), `${NIX32}.nar`)
})

test('a narinfo names its NAR file after its NarHash and Compression', () => {
  const narHash = parseNixHash(`sha256:${NIX32}`)
  assert.equal(narFileNameOf({ narHash, compression: 'zstd' }), `${NIX32}.nar.zst`)
})

test('parseNarFileName refuses whatever is not <52 nix32>.nar<known ext>', () => {
  const rows: Array<[string, string]> = [
    ['NFS silly-rename file', '.nfs000000000123456700000001'],
    ['temp file', `${NIX32}.nar.xz.part`],
    ['unknown extension', `${NIX32}.nar.gzip`],
    ['short hash', `${NIX32.slice(1)}.nar.xz`],
    ['long hash', `0${NIX32}.nar.xz`],
    ['letter outside nix32', `${NIX32.slice(0, -1)}e.nar.xz`],
    ['upper case', `${NIX32.toUpperCase()}.nar`],
    ['path', `../${NIX32.slice(3)}.nar`],
    ['empty', ''],
  ]
  for (const [why, name] of rows) assert.equal(parseNarFileName(name), undefined, why)
})

test('NAR files are sharded by their first two characters', () => {
  assert.equal(narShardPath(`${NIX32}.nar.xz`), `10/${NIX32}.nar.xz`)
})
