/**
 * CPU of decoding and checking the closure's small xz NARs, as a verification
 * thread does, with several at once: the process's own CPU and that of its
 * exited children (`xz`), per NAR. With `--no-nar-size` the decoders are not
 * told the NARs' sizes (every decoder counts as a whole dictionary).
 *
 *   node --import tsx bench/proxy/xz-small-cpu.ts [--concurrency N] [--no-nar-size]
 *
 * Uses the upstream data run.ts made (bench/.data/upstream).
 */
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { NarSink, parseNarInfo } from '../../src/protocol/index.js'
import { createDecompressor } from '../../src/store/index.js'

const BENCH = dirname(dirname(fileURLToPath(import.meta.url)))
const UP = join(BENCH, '.data', 'upstream')
const arg = (n: string, d: number) => (process.argv.includes(n) ? Number(process.argv[process.argv.indexOf(n) + 1]) : d)
const concurrency = arg('--concurrency', 10)
const withNarSize = !process.argv.includes('--no-nar-size')

const items = readdirSync(UP)
  .filter((f) => f.endsWith('.narinfo'))
  .map((f) => parseNarInfo(readFileSync(join(UP, f), 'utf8')))
  .filter((i) => i.compression === 'xz' && (i.fileSize ?? Infinity) <= 256 * 1024)
  .map((info) => ({ info, file: readFileSync(join(UP, info.url)) }))

function ticks(): { self: number; children: number } {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')
  return { self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) }
}

async function once(): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const { info, file } = items[next++]!
        const sink = new NarSink({ hash: info.narHash, size: info.narSize })
        await pipeline(Readable.from([file]), createDecompressor('xz', info.fileSize, withNarSize ? info.narSize : undefined), sink)
        if (!sink.result) throw new Error(`${info.storePath} did not verify`)
      }
    }),
  )
}

await once()
const t0 = ticks()
const c0 = performance.now()
const rounds = 3
for (let r = 0; r < rounds; r++) await once()
const t1 = ticks()
const n = items.length * rounds
const hz = 100
process.stdout.write(
  `${n} NARs, ${concurrency} at once, NarSize ${withNarSize ? 'told' : 'not told'}: ` +
    `${((performance.now() - c0) / n).toFixed(2)} ms wall, CPU ${(((t1.self - t0.self) * 1000) / hz / n).toFixed(2)} ms own + ${(((t1.children - t0.children) * 1000) / hz / n).toFixed(2)} ms children per NAR\n`,
)
