/**
 * NAR listings (`<hash>.ls`) against a vector written by the real Nix 2.26
 * (`nix copy --to 'file://…?write-nar-listing=true'`): a directory with an
 * executable in a subdirectory, an empty file, a file and a symlink.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { formatNixHash, NarListingWriter, NarParser, sha256Of } from '../../src/protocol/index.js'
import { writeNar } from '../helpers/nar-writer.js'

/** The NAR of that output, and the listing Nix 2.26.3 wrote for it, byte for byte. */
const NAR = Buffer.from(
  'DQAAAAAAAABuaXgtYXJjaGl2ZS0xAAAAAQAAAAAAAAAoAAAAAAAAAAQAAAAAAAAAdHlwZQAAAAAJAAAAAAAAAGRpcmVjdG9yeQAAAAAAAAAFAAAAAAAAAGVudHJ5AAAAAQAAAAAAAAAoAAAAAAAAAAQAAAAAAAAAbmFtZQAAAAADAAAAAAAAAGJpbgAAAAAABAAAAAAAAABub2RlAAAAAAEAAAAAAAAAKAAAAAAAAAAEAAAAAAAAAHR5cGUAAAAACQAAAAAAAABkaXJlY3RvcnkAAAAAAAAABQAAAAAAAABlbnRyeQAAAAEAAAAAAAAAKAAAAAAAAAAEAAAAAAAAAG5hbWUAAAAAAwAAAAAAAABydW4AAAAAAAQAAAAAAAAAbm9kZQAAAAABAAAAAAAAACgAAAAAAAAABAAAAAAAAAB0eXBlAAAAAAcAAAAAAAAAcmVndWxhcgAKAAAAAAAAAGV4ZWN1dGFibGUAAAAAAAAAAAAAAAAAAAgAAAAAAAAAY29udGVudHMKAAAAAAAAACMhL2Jpbi9zaAoAAAAAAAABAAAAAAAAACkAAAAAAAAAAQAAAAAAAAApAAAAAAAAAAEAAAAAAAAAKQAAAAAAAAABAAAAAAAAACkAAAAAAAAABQAAAAAAAABlbnRyeQAAAAEAAAAAAAAAKAAAAAAAAAAEAAAAAAAAAG5hbWUAAAAABQAAAAAAAABlbXB0eQAAAAQAAAAAAAAAbm9kZQAAAAABAAAAAAAAACgAAAAAAAAABAAAAAAAAAB0eXBlAAAAAAcAAAAAAAAAcmVndWxhcgAIAAAAAAAAAGNvbnRlbnRzAAAAAAAAAAABAAAAAAAAACkAAAAAAAAAAQAAAAAAAAApAAAAAAAAAAUAAAAAAAAAZW50cnkAAAABAAAAAAAAACgAAAAAAAAABAAAAAAAAABuYW1lAAAAAAEAAAAAAAAAZgAAAAAAAAAEAAAAAAAAAG5vZGUAAAAAAQAAAAAAAAAoAAAAAAAAAAQAAAAAAAAAdHlwZQAAAAAHAAAAAAAAAHJlZ3VsYXIACAAAAAAAAABjb250ZW50cwQAAAAAAAAAZGVwCgAAAAABAAAAAAAAACkAAAAAAAAAAQAAAAAAAAApAAAAAAAAAAUAAAAAAAAAZW50cnkAAAABAAAAAAAAACgAAAAAAAAABAAAAAAAAABuYW1lAAAAAAQAAAAAAAAAbGluawAAAAAEAAAAAAAAAG5vZGUAAAAAAQAAAAAAAAAoAAAAAAAAAAQAAAAAAAAAdHlwZQAAAAAHAAAAAAAAAHN5bWxpbmsABgAAAAAAAAB0YXJnZXQAAAEAAAAAAAAAZgAAAAAAAAABAAAAAAAAACkAAAAAAAAAAQAAAAAAAAApAAAAAAAAAAEAAAAAAAAAKQAAAAAAAAA=',
  'base64',
)
const LISTING =
  '{"root":{"entries":{"bin":{"entries":{"run":{"executable":true,"narOffset":400,"size":10,"type":"regular"}},"type":"directory"},"empty":{"narOffset":632,"size":0,"type":"regular"},"f":{"narOffset":816,"size":4,"type":"regular"},"link":{"target":"f","type":"symlink"}},"type":"directory"},"version":1}'

function list(nar: Buffer, chunk: number, maxBytes?: number): string {
  const writer = new NarListingWriter(maxBytes)
  const parser = new NarParser(undefined, writer)
  for (let i = 0; i < nar.length; i += chunk) parser.push(nar.subarray(i, i + chunk))
  parser.end()
  return writer.text
}

test("the listing is the one Nix writes, whatever the chunking", () => {
  assert.equal(formatNixHash(sha256Of(NAR)), 'sha256:1arr0hn8c4j0g6d5a06wiafn2nbdv5k1mq1369r7cz23y0m051p7')
  for (const chunk of [1, 5, 8, 64, NAR.length]) assert.equal(list(NAR, chunk), LISTING)
})

test('a NAR of one regular file or one symlink lists as its root', () => {
  const file = writeNar({ type: 'regular', contents: 'hi\n', executable: true })
  assert.equal(list(file, 3), '{"root":{"executable":true,"narOffset":128,"size":3,"type":"regular"},"version":1}')
  const link = writeNar({ type: 'symlink', target: 'a "quoted" target' })
  assert.equal(list(link, 3), '{"root":{"target":"a \\"quoted\\" target","type":"symlink"},"version":1}')
})

test('names are written as UTF-8 JSON strings; a name that is not UTF-8 cannot be listed', () => {
  const nar = writeNar({ type: 'directory', entries: [[Buffer.from('caf\u00e9\n', 'utf8').toString('latin1'), { type: 'regular', contents: '' }]] })
  assert.equal((JSON.parse(list(nar, 7)) as { root: { entries: Record<string, { size: number }> } }).root.entries['caf\u00e9\n'].size, 0)
  const bad = writeNar({ type: 'directory', entries: [['\xff', { type: 'regular', contents: '' }]] })
  assert.throws(() => list(bad, 7), { code: 'NAR_INVALID' })
})

test('a listing larger than the cap fails instead of growing', () => {
  const entries: Array<[string, { type: 'regular'; contents: string }]> = []
  for (let i = 0; i < 1000; i++) entries.push([`f${String(i).padStart(4, '0')}`, { type: 'regular', contents: 'x' }])
  const nar = writeNar({ type: 'directory', entries })
  assert.ok(list(nar, 4096).length > 50_000)
  assert.throws(() => list(nar, 4096, 10_000), { code: 'PAYLOAD_TOO_LARGE' })
})
