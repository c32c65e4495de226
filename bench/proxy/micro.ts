/**
 * Micro-benchmarks (mitata) of the costs the proxy profiles point at, on
 * narthex's own code (the build run.ts made) and on the alternatives proposed
 * for src/ in RESULTS.md:
 *
 * - ed25519: narthex's signFingerprint/verifyFingerprint (@noble/ed25519, pure
 *   JS, on the event loop) against node:crypto's native ed25519;
 * - decompressing one small xz NAR (a real one from the closure, ~300 bytes):
 *   narthex's createDecompressor('xz') (an `xz -dc` child per NAR) against
 *   lzma-native in-process (already a dependency);
 * - verification throughput over the 512 MiB NAR: sha256 alone, narthex's
 *   NarSink (sha256 + NAR grammar), HashingPassThrough + NarSink in a row as a
 *   download with compression=none does (the same bytes hashed twice).
 *
 *   node --import tsx bench/proxy/micro.ts
 */
import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { Readable, type Duplex, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { bench, group, run, summary } from 'mitata'
import { buildNarthex } from './build.js'
import { dataDirs, readManifest } from './prepare.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const manifest = await readManifest(DIRS)
const build = await buildNarthex(ROOT, DIRS.root, {}, (m) => process.stderr.write(`[micro] ${m}\n`))
const dist = join(dirname(dirname(build.bin)), 'dist')
const P = (await import(pathToFileURL(join(dist, 'protocol', 'index.js')).href)) as Record<string, any>
const S = (await import(pathToFileURL(join(dist, 'store', 'index.js')).href)) as Record<string, any>
const require = createRequire(join(ROOT, 'package.json'))

// ------------------------------------------------------------- ed25519 ----

const secret = P.parseSecretKey((await readFile(join(DIRS.root, 'upstream.sec'), 'utf8')).trim())
const publicKey = P.toPublicKey(secret)
const narinfo = P.parseNarInfo(await readFile(join(DIRS.cache, `${manifest.closureHashParts[1]}.narinfo`), 'utf8'))
const fingerprint: string = P.fingerprintNarInfo(narinfo)
const sigText: string = P.signFingerprint(fingerprint, secret)
if (!P.verifyFingerprint(fingerprint, sigText, [publicKey])) throw new Error('noble signature does not verify')

const seed: Uint8Array = secret.seed
const nodePriv = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' })
const nodePub = createPublicKey(nodePriv)
const msg = Buffer.from(fingerprint, 'utf8')
const rawSig = Buffer.from(sigText.slice(sigText.indexOf(':') + 1), 'base64')
if (!cryptoVerify(null, msg, nodePub, rawSig)) throw new Error('node:crypto does not verify the noble signature')
if (!cryptoSign(null, msg, nodePriv).equals(rawSig)) throw new Error('node:crypto signs differently from noble (ed25519 is deterministic)')

summary(() => {
  group('ed25519 sign of a narinfo fingerprint', () => {
    bench('narthex signFingerprint (@noble/ed25519)', () => P.signFingerprint(fingerprint, secret))
    bench('node:crypto sign', () => cryptoSign(null, msg, nodePriv))
  })
  group('ed25519 verify of a narinfo signature', () => {
    bench('narthex verifyFingerprint (@noble/ed25519)', () => P.verifyFingerprint(fingerprint, sigText, [publicKey]))
    bench('node:crypto verify', () => cryptoVerify(null, msg, nodePub, rawSig))
  })
})

// ------------------------------------------------------------ small xz ----

const closureNars = (await readdir(join(DIRS.cache, 'nar'))).filter((f) => f.endsWith('.nar.xz'))
const smallXz = await readFile(join(DIRS.cache, 'nar', closureNars[0]!))
if (smallXz.length === 0 || smallXz.length > 4096) throw new Error(`unexpected small NAR size ${smallXz.length}`)

async function decompressWith(d: Duplex): Promise<number> {
  let n = 0
  const sink: Writable = new (await import('node:stream')).Writable({
    write(c: Buffer, _e, cb) {
      n += c.length
      cb()
    },
  })
  await pipeline(Readable.from([smallXz]), d, sink)
  if (n === 0) throw new Error('decompressed nothing')
  return n
}
const lzma = require('lzma-native') as { createDecompressor(): Duplex }

summary(() => {
  group(`decompress one small xz NAR (${smallXz.length} bytes)`, () => {
    bench("narthex createDecompressor('xz'): xz -dc child", async () => decompressWith(S.createDecompressor('xz')))
    bench('lzma-native in-process', async () => decompressWith(lzma.createDecompressor()))
  })
})

// Run before the 512 MiB file is loaded: a big heap makes every fork (spawn) slower.
await run({ colors: false })

// ------------------------------------------------- verification, 512 MiB ----

const bigFile = join(DIRS.cache, manifest.big.url)
const bigSize = (await stat(bigFile)).size
const big = await readFile(bigFile)
const CHUNK = 64 * 1024
const chunks = Array.from({ length: Math.ceil(big.length / CHUNK) }, (_, i) => big.subarray(i * CHUNK, (i + 1) * CHUNK))
if (bigSize !== manifest.big.fileSize || big.length === 0) throw new Error('the big NAR is not what the manifest says')
const expected = { hash: P.parseNixHash(/^NarHash: (.*)$/m.exec(await readFile(join(DIRS.cache, `${manifest.big.hashPart}.narinfo`), 'utf8'))![1]), size: manifest.big.narSize }

async function feed(...stages: Array<Duplex | Writable>): Promise<void> {
  await pipeline(Readable.from(chunks, { objectMode: false, highWaterMark: 16 }), ...(stages as [Duplex]))
}

const results: Array<[string, number]> = []
async function time(name: string, fn: () => Promise<void> | void): Promise<void> {
  const ms: number[] = []
  for (let i = 0; i < 3; i++) {
    const t = performance.now()
    await fn()
    ms.push(performance.now() - t)
  }
  ms.sort((a, b) => a - b)
  results.push([name, ms[1]!])
}

await time('sha256 of the 512 MiB NAR in 64 KiB chunks', () => {
  const h = createHash('sha256')
  for (const c of chunks) h.update(c)
  h.digest()
})
await time('narthex NarSink (sha256 + NAR grammar)', () => feed(new P.NarSink(expected)))
await time('narthex HashingPassThrough → NarSink (compression=none download: 2 hashes)', () =>
  feed(new P.HashingPassThrough({ size: bigSize }, 'NAR file'), new P.NarSink(expected)),
)
console.log('\nverification of the 512 MiB NAR from memory (median of 3, single thread):')
for (const [name, ms] of results) console.log(`  ${name}: ${(ms / 1000).toFixed(3)} s = ${(bigSize / (ms / 1000) / 1e9).toFixed(2)} GB/s`)
