import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import {
  encodeNix32,
  formatNarInfo,
  formatNixHash,
  parseNarInfo,
  urlAgreesWithCompression,
  COMPRESSION_EXTENSIONS,
  type Compression,
  type NarInfo,
} from '../../src/protocol/index.js'

const fixture = (name: string) => readFileSync(new URL(`../fixtures/real-narinfo/${name}`, import.meta.url), 'utf8')

test('real cache.nixos.org narinfos parse and format byte-identically', () => {
  for (const name of ['curl-bin.narinfo', 'net-tools.narinfo']) {
    const text = fixture(name)
    const info = parseNarInfo(text)
    assert.equal(formatNarInfo(info), text, name)
  }
  const curl = parseNarInfo(fixture('curl-bin.narinfo'))
  assert.equal(curl.storePath.name, 'curl-7.82.0-bin')
  assert.equal(curl.compression, 'xz')
  assert.equal(curl.narSize, 196040)
  assert.equal(curl.fileSize, 68852)
  assert.equal(formatNixHash(curl.narHash), 'sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0')
  assert.equal(curl.references.length, 4)
  assert.equal(curl.deriver, '5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv')
  assert.equal(curl.sigs.length, 2)
})

const BASE = `StorePath: /nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60_p20170221182432
URL: nar/1094wph9z4nwlgvsd53abfz8i117ykiv5dwnq9nnhz846s7xqd7d.nar.xz
Compression: xz
FileHash: sha256:1094wph9z4nwlgvsd53abfz8i117ykiv5dwnq9nnhz846s7xqd7d
FileSize: 114980
NarHash: sha256:0lxjvvpr59c2mdram7ympy5ay741f180kv3349hvfc3f8nrmbqf6
NarSize: 464152
References: 7gx4kiv5m0i7d7qkixq2cwzbr10lvxwc-glibc-2.27
`

test('parsing follows Nix: unknown keys ignored, last scalar wins, defaults, other encodings', () => {
  const info = parseNarInfo(`System: x86_64-linux\n${BASE}NarSize: 7\nDeriver: unknown-deriver\n`)
  assert.equal(info.narSize, 7)
  assert.equal(info.deriver, undefined)
  const noCompression = parseNarInfo(BASE.replace('Compression: xz\n', ''))
  assert.equal(noCompression.compression, 'bzip2')
  // An empty value is the default too (nar-info.cc: `if (compression == "") compression = "bzip2"`).
  assert.equal(parseNarInfo(BASE.replace('Compression: xz', 'Compression: ')).compression, 'bzip2')
  for (const compression of Object.keys(COMPRESSION_EXTENSIONS)) {
    assert.equal(parseNarInfo(BASE.replace('Compression: xz', `Compression: ${compression}`)).compression, compression)
  }
  const sri = parseNarInfo(
    BASE.replace(
      'NarHash: sha256:0lxjvvpr59c2mdram7ympy5ay741f180kv3349hvfc3f8nrmbqf6',
      `NarHash: sha256-${Buffer.from(parseNarInfo(BASE).narHash.digest).toString('base64')}`,
    ),
  )
  assert.equal(formatNarInfo(sri), BASE)
  // Empty References lines may repeat; Sig lines accumulate and are kept sorted and unique.
  const sigs = parseNarInfo(`${BASE.replace(/References: .*\n/, 'References: \nReferences: \n')}Sig: b:x\nSig: a:y\nSig: b:x\n`)
  assert.deepEqual(sigs.sigs, ['a:y', 'b:x'])
  assert.deepEqual(sigs.references, [])
  assert.match(formatNarInfo(sigs), /\nReferences: \nSig: a:y\nSig: b:x\n$/)
})

test('malformed narinfos are rejected with NARINFO_INVALID naming line and field', () => {
  const rows: Array<[string, string, number | undefined, string | undefined]> = [
    ['missing final newline', BASE.slice(0, -1), 8, undefined],
    ['no colon', `${BASE}garbage\n`, 9, undefined],
    ['bad NarSize', BASE.replace('NarSize: 464152', 'NarSize: 12x'), 7, 'NarSize'],
    ['negative FileSize', BASE.replace('FileSize: 114980', 'FileSize: -1'), 5, 'FileSize'],
    ['bad NarHash', BASE.replace('NarHash: sha256:0', 'NarHash: sha256:e'), 6, 'NarHash'],
    ['bad StorePath', BASE.replace('/nix/store/00bgd', '/nix/store/00bge'), 1, 'StorePath'],
    ['bad reference', BASE.replace('7gx4kiv5', '7gx4ki/5'), 8, 'References'],
    ['extra References', `${BASE}References: 7gx4kiv5m0i7d7qkixq2cwzbr10lvxwc-glibc-2.27\n`, 9, 'References'],
    ['extra CA', `${BASE}CA: fixed:r:sha256:x\nCA: fixed:r:sha256:y\n`, 10, 'CA'],
    ['missing StorePath', BASE.replace(/StorePath: .*\n/, ''), undefined, 'StorePath'],
    ['missing NarHash', BASE.replace(/NarHash: .*\n/, ''), undefined, 'NarHash'],
    ['missing URL', BASE.replace(/URL: .*\n/, ''), undefined, 'URL'],
    ['zero NarSize', BASE.replace('NarSize: 464152', 'NarSize: 0'), undefined, 'NarSize'],
    ['CRLF', BASE.replace(/\n/g, '\r\n'), 1, 'StorePath'],
    // Nix would keep it and fail only when decompressing; narthex cannot verify such a NAR.
    ['unknown Compression', BASE.replace('Compression: xz', 'Compression: lz5'), 3, 'Compression'],
    ['Compression in another case', BASE.replace('Compression: xz', 'Compression: XZ'), 3, 'Compression'],
  ]
  for (const [why, text, line, field] of rows) {
    assert.throws(
      () => parseNarInfo(text),
      (err: { code?: string; detail?: { line?: number; field?: string } }) => {
        assert.equal(err.code, 'NARINFO_INVALID', why)
        if (line !== undefined) assert.equal(err.detail?.line, line, why)
        if (field !== undefined) assert.equal(err.detail?.field, field, why)
        return true
      },
      why,
    )
  }
})

const nix32 = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => encodeNix32(b))
const name = fc.stringMatching(/^[0-9A-Za-z+_?=][0-9A-Za-z+\-._?=]{0,30}$/)
const base = fc.tuple(nix32(20), name).map(([h, n]) => `${h}-${n}`)
const hash = nix32(32).map((h) => `sha256:${h}`)

const narinfoText = fc
  .record({
    path: base,
    url: fc.stringMatching(/^nar\/[0-9a-z]{1,60}\.nar(\.xz|\.zst)?$/),
    compression: fc.constantFrom('xz', 'zstd', 'none', 'bzip2', 'br'),
    file: fc.option(fc.tuple(hash, fc.nat()), { nil: undefined }),
    narHash: hash,
    narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    refs: fc.uniqueArray(base, { maxLength: 6 }),
    deriver: fc.option(base.map((b) => `${b}.drv`), { nil: undefined }),
    sigs: fc.uniqueArray(fc.stringMatching(/^[a-z0-9.-]{1,12}:[A-Za-z0-9+/]{86}==$/), { maxLength: 3 }),
    ca: fc.option(hash.map((h) => `fixed:r:${h}`), { nil: undefined }),
  })
  .map((r) => {
    let t = `StorePath: /nix/store/${r.path}\nURL: ${r.url}\nCompression: ${r.compression}\n`
    if (r.file) t += `FileHash: ${r.file[0]}\nFileSize: ${r.file[1]}\n`
    t += `NarHash: ${r.narHash}\nNarSize: ${r.narSize}\nReferences: ${[...r.refs].sort().join(' ')}\n`
    if (r.deriver) t += `Deriver: ${r.deriver}\n`
    for (const s of [...r.sigs].sort()) t += `Sig: ${s}\n`
    if (r.ca) t += `CA: ${r.ca}\n`
    return t
  })

test('narinfo in Nix format round-trips byte-identically (property)', () => {
  fc.assert(
    fc.property(narinfoText, (text) => {
      const info: NarInfo = parseNarInfo(text)
      assert.equal(formatNarInfo(info), text)
      assert.deepEqual(parseNarInfo(formatNarInfo(info)), info)
    }),
    { numRuns: 3000 },
  )
})

test('the narinfo parser never throws anything but NARINFO_INVALID on arbitrary input', () => {
  const lines = fc.array(
    fc.oneof(
      fc.constantFrom('StorePath', 'URL', 'Compression', 'NarHash', 'NarSize', 'References', 'Sig', 'CA', 'FileSize', 'Deriver').chain((k) =>
        fc.string({ maxLength: 80 }).map((v) => `${k}: ${v}`),
      ),
      fc.string({ maxLength: 40 }),
    ),
    { maxLength: 12 },
  )
  fc.assert(
    fc.property(lines, fc.boolean(), (ls, finalNewline) => {
      const text = ls.join('\n') + (finalNewline ? '\n' : '')
      try {
        parseNarInfo(text)
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'NARINFO_INVALID', String(err))
      }
    }),
    { numRuns: 20000 },
  )
})

test('urlAgreesWithCompression: a known extension must name the Compression', () => {
  const rows: Array<[string, Compression, boolean]> = [
    ['nar/abc.nar.xz', 'xz', true],
    ['nar/abc.nar.xz', 'bzip2', false],
    ['nar/abc.nar', 'none', true],
    ['nar/abc.nar', 'zstd', true],
    ['nar/abc.nar.zst', 'none', false],
    ['nar/abc.nar.zst?x=1', 'zstd', true],
    ['nar/abc.nar.bz2', 'bzip2', true],
    ['download/abc', 'xz', true],
    ['nar/abc.nar.weird', 'xz', true],
  ]
  for (const [url, compression, expected] of rows) assert.equal(urlAgreesWithCompression(url, compression), expected, `${url} ${compression}`)
})
