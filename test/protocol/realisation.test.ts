/**
 * Realisations (`realisations/<id>.doi`) against vectors written by the real
 * Nix 2.26: `nix build` of a content-addressed derivation with
 * `secret-key-files` set, then `nix copy --to file://…` of `DRV^out`.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  fingerprintRealisation,
  formatRealisation,
  isDrvOutputId,
  parsePublicKey,
  parseRealisation,
  parseSecretKey,
  signRealisation,
  validRealisationSignatures,
} from '../../src/protocol/index.js'

/** Written by Nix 2.26.3, byte for byte. */
const DOI =
  '{"dependentRealisations":{},"id":"sha256:29f2771af2282b5ae212ec11190f1203df18241a742c3a15ce15dc42aed1701a!out","outPath":"ljs4nbrxlg2frzzb7wrasyblvrsqmz29-ca-top","signatures":["vec-1:uEtUgn2pfEWdA5ZdmZPzcDLIHb9eaRhhTVWdTfbAKBmn5YpBweGgOZBbBxDLsJ/aTqLvDcvjFGZR3AHc/dmyDA=="]}'
/** The throwaway key pair (`nix key generate-secret --key-name vec-1`) that signed it. */
const SECRET = 'vec-1:Xn0+u33C1Ycee+26LcrxkpKb8KJSMANlQfYuIi+QBK2OD5sjvxNcsmzjRIlKBGLy9+1KX13rgQheN3fidCSzqw=='
const PUBLIC = 'vec-1:jg+bI78TXLJs40SJSgRi8vftSl9d64EIXjd34nQks6s='

test("a realisation Nix wrote parses and formats back to the same bytes", () => {
  const r = parseRealisation(DOI)
  assert.equal(r.id, 'sha256:29f2771af2282b5ae212ec11190f1203df18241a742c3a15ce15dc42aed1701a!out')
  assert.deepEqual(r.outPath, { hashPart: 'ljs4nbrxlg2frzzb7wrasyblvrsqmz29', name: 'ca-top' })
  assert.equal(formatRealisation(r), DOI)
})

test("Nix's signature verifies over the fingerprint, and narthex's signing reproduces it", () => {
  const r = parseRealisation(DOI)
  assert.equal(
    fingerprintRealisation(r),
    '{"dependentRealisations":{},"id":"sha256:29f2771af2282b5ae212ec11190f1203df18241a742c3a15ce15dc42aed1701a!out","outPath":"ljs4nbrxlg2frzzb7wrasyblvrsqmz29-ca-top"}',
  )
  assert.deepEqual(validRealisationSignatures(r, [parsePublicKey(PUBLIC)]), r.signatures)
  const resigned = signRealisation({ ...r, signatures: [] }, parseSecretKey(SECRET))
  assert.deepEqual(resigned.signatures, r.signatures)
})

test('a signature does not verify once the outPath or the id changes, nor under another key', () => {
  const r = parseRealisation(DOI)
  const keys = [parsePublicKey(PUBLIC)]
  assert.deepEqual(validRealisationSignatures({ ...r, outPath: { ...r.outPath, name: 'ca-tOp' } }, keys), [])
  assert.deepEqual(validRealisationSignatures({ ...r, id: r.id.replace('!out', '!dev') }, keys), [])
  assert.deepEqual(validRealisationSignatures(r, [{ name: 'vec-1', key: new Uint8Array(32).fill(9) }]), [])
})

test('dependent realisations are kept, sorted by id, in the fingerprint', () => {
  const a = `sha256:${'a'.repeat(64)}!out`
  const b = `sha256:${'b'.repeat(64)}!dev`
  const text = JSON.stringify({
    id: `sha256:${'c'.repeat(64)}!out`,
    outPath: 'ljs4nbrxlg2frzzb7wrasyblvrsqmz29-ca-top',
    dependentRealisations: { [b]: 'ljs4nbrxlg2frzzb7wrasyblvrsqmz29-b', [a]: 'ljs4nbrxlg2frzzb7wrasyblvrsqmz29-a' },
  })
  const r = parseRealisation(text)
  assert.deepEqual(r.signatures, [])
  assert.match(fingerprintRealisation(r), new RegExp(`^\\{"dependentRealisations":\\{"${a}":"[^"]+-a","${b}":"[^"]+-b"\\},"id"`))
})

test('malformed realisations are refused with a clear error', () => {
  const good = JSON.parse(DOI) as Record<string, unknown>
  for (const bad of [
    'not json',
    '[]',
    JSON.stringify({ ...good, id: 'sha256:29f2!out' }),
    JSON.stringify({ ...good, id: String(good.id).replace('!', '') }),
    JSON.stringify({ ...good, outPath: '/nix/store/ljs4nbrxlg2frzzb7wrasyblvrsqmz29-ca-top' }),
    JSON.stringify({ ...good, signatures: 'x' }),
    JSON.stringify({ ...good, dependentRealisations: { nope: 'x' } }),
  ]) {
    assert.throws(() => parseRealisation(bad), /invalid realisation|store path/, bad)
  }
  assert.equal(isDrvOutputId('sha256:29f2771af2282b5ae212ec11190f1203df18241a742c3a15ce15dc42aed1701a!out'), true)
  assert.equal(isDrvOutputId('sha256:29F2771AF2282B5AE212EC11190F1203DF18241A742C3A15CE15DC42AED1701A!out'), false)
  assert.equal(isDrvOutputId('sha256:29f2771af2282b5ae212ec11190f1203df18241a742c3a15ce15dc42aed1701a!a/b'), false)
})
