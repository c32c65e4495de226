/**
 * What node:http itself allows on this machine, next to narthex and nginx
 * under the same load (see ceiling-server.mjs): warm narinfo req/s (wrk as in
 * scenario 1) and warm 512 MiB NAR throughput (curl), interleaved.
 *
 *   node --import tsx bench/proxy/ceiling.ts [--runs N]
 *
 * Uses the data and the narthex build that run.ts made.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { buildNarthex } from './build.js'
import { busyFraction, curl, getAll, getText, loadavg, median, wrk } from './measure.js'
import { dataDirs, readManifest } from './prepare.js'
import { Narthex, Nginx, startUpstream } from './servers.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const RUN_DIR = join(DIRS.root, 'run-ceiling')
const i = process.argv.indexOf('--runs')
const RUNS = i >= 0 ? Number(process.argv[i + 1]) : 3
const say = (m: string) => process.stderr.write(`[ceiling] ${m}\n`)

const manifest = await readManifest(DIRS)
const build = await buildNarthex(ROOT, DIRS.root, {}, say)
await rm(RUN_DIR, { recursive: true, force: true })
await mkdir(RUN_DIR, { recursive: true })
const listFile = join(DIRS.root, 'narinfo-paths.txt')
const wrkScript = join(HERE, 'narinfo.lua')

const upstream = await startUpstream(RUN_DIR, DIRS.cache)
const nginx = await Nginx.start({
  template: join(HERE, 'nginx', 'proxy.conf'),
  prefix: join(RUN_DIR, 'nginx'),
  vars: { CACHE: join(RUN_DIR, 'nginx', 'cache'), UPSTREAM_PORT: new URL(upstream.url).port },
})
const narthex = await Narthex.start({
  bin: build.bin,
  dir: join(RUN_DIR, 'narthex'),
  signingKeyFile: join(DIRS.root, 'narthex.key'),
  upstreamUrl: upstream.url,
  upstreamPublicKey: manifest.upstreamPublicKey,
})
const bare = spawn(process.execPath, [join(HERE, 'ceiling-server.mjs'), DIRS.cache], { stdio: ['ignore', 'pipe', 'inherit'] })
const [bareUrl] = (await once(createInterface({ input: bare.stdout! }), 'line')) as [string]

try {
  const big = manifest.big
  const narPath = async (base: string) => `${base}/${/^URL: (.*)$/m.exec((await getText(`${base}/${big.hashPart}.narinfo`)).text)![1]}`
  const targets: Array<[string, string, string]> = [
    ['node:http bare (Map lookup)', bareUrl, `${bareUrl}/stream/${big.url}`],
    ['narthex', narthex.url, await narPath(narthex.url)],
    ['nginx proxy_cache', nginx.url, await narPath(nginx.url)],
  ]
  const reuse = `${bareUrl}/reuse/${big.url}`
  for (const [, base, nar] of targets) {
    const urls = manifest.closureHashParts.map((h) => `${base}/${h}.narinfo`)
    await getAll(urls)
    await getAll(urls)
    await curl(nar, big.fileSize)
    await curl(nar, big.fileSize)
  }
  const rps = new Map<string, number[]>()
  const gbps = new Map<string, number[]>()
  const push = (m: Map<string, number[]>, k: string, v: number) => m.set(k, [...(m.get(k) ?? []), v])
  for (let r = 0; r < RUNS; r++) {
    for (const [name, base, nar] of targets) {
      const w = await wrk(base, listFile, wrkScript, { seconds: 8 })
      push(rps, name, w.rps)
      push(gbps, name, big.fileSize / (await curl(nar, big.fileSize)).total / 1e9)
    }
    push(gbps, 'node:http bare, reused 1 MiB buffers', big.fileSize / (await curl(reuse, big.fileSize)).total / 1e9)
    say(`run ${r} done; load ${(await loadavg()).join(' ')}, busy now ${((await busyFraction(1000)) * 100).toFixed(0)}%`)
  }
  console.log('\nwarm narinfo req/s (wrk -t2 -c64 -d8s), median of', RUNS)
  for (const [k, v] of rps) console.log(`  ${k}: ${median(v).toFixed(0)}   (${v.map((x) => x.toFixed(0)).join(', ')})`)
  console.log('\nwarm 512 MiB NAR, 1 curl (GB/s), median of', RUNS)
  for (const [k, v] of gbps) console.log(`  ${k}${k.startsWith('node:http bare (') ? ', createReadStream + pipeline like narthex' : ''}: ${median(v).toFixed(2)}   (${v.map((x) => x.toFixed(2)).join(', ')})`)
} finally {
  bare.kill('SIGTERM')
  await narthex.stop()
  await nginx.stop()
  await upstream.stop()
}
