import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { decodeNix32, encodeNix32, isNix32 } from '../../src/protocol/index.js'

// Vectors from docs/PROTOCOL.md section 4 (taken from Nix's base-nix-32 tests).
const VECTORS: Array<[string, string]> = [
  ['', ''],
  ['1f', '0z'],
  ['d86b3392c1202e8ff5a423b302e6284db7f8f435ea9f39b5b1b20fd3ac36dfcb', '1jyz6snd63xjn6skk7za6psgidsd53k05cr3lksqybi0q6936syq'],
  [createHash('sha256').update('abc').digest('hex'), '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
]

test('nix32 encodes and decodes the vectors of Nix', () => {
  for (const [hex, nix32] of VECTORS) {
    assert.equal(encodeNix32(Buffer.from(hex, 'hex')), nix32)
    assert.equal(decodeNix32(nix32).toString('hex'), hex)
  }
})

test('nix32 decoding rejects bad characters, bad lengths and overflow bits', () => {
  const cases: Array<[string, string]> = [
    ['e', 'a character outside the alphabet (e)'],
    ['0u', 'u is not in the alphabet'],
    ['1jyz6snd63xjn6skk7za6psgidsd53k05cr3lksqybi0q6936sy', 'length 51 encodes no byte count'],
    ['zz', 'two characters carry 10 bits, only 8 fit: overflow'],
    ['1jyz6snd63xjn6skk7za6psgidsd53k05cr3lksqybi0q6936syQ', 'upper case'],
    ['1jyz6snd63xjn6skk7za6psgidsd53k05cr3lksqybi0q6936sy\u00e9', 'non-ASCII'],
  ]
  for (const [input, why] of cases) {
    assert.throws(() => decodeNix32(input), { code: 'NIX32_INVALID' }, why)
  }
  assert.equal(isNix32('0123456789abcdfghijklmnpqrsvwxyz'), true)
  assert.equal(isNix32('e'), false)
})

test('nix32 round-trips any bytes, and every valid string has one encoding', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const text = encodeNix32(bytes)
      assert.equal(text.length, Math.ceil((bytes.length * 8) / 5))
      assert.deepEqual(new Uint8Array(decodeNix32(text)), bytes)
    }),
    { numRuns: 2000 },
  )
  fc.assert(
    fc.property(fc.stringMatching(/^[0-9a-df-np-sv-z]{0,60}$/), (text) => {
      let decoded: Buffer
      try {
        decoded = decodeNix32(text)
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'NIX32_INVALID')
        return
      }
      assert.equal(encodeNix32(decoded), text)
    }),
    { numRuns: 2000 },
  )
})
