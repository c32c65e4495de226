/**
 * Diagnostics behind the analysis in RESULTS.md, one at a time, each against
 * a fresh narthex (the build run.ts made) in front of the upstream:
 *
 *   node --import tsx bench/proxy/diagnose.ts ttfb      strace -f -tt of narthex during one cold 512 MiB
 *                                                        fetch: what happens before the first byte
 *   node --import tsx bench/proxy/diagnose.ts xz        CPU time of narthex and of its `xz` child during
 *                                                        a cold xz fetch, and the reference commands
 *   node --import tsx bench/proxy/diagnose.ts rss [N…]  idle and peak RSS against the number of clients
 *                                                        of one cold 512 MiB NAR (default 1 16 64)
 *   node --import tsx bench/proxy/diagnose.ts gc        --trace-gc during warm 512 MiB fetches
 *
 * Extra node flags for narthex: NODE_EXTRA="--max-semi-space-size=1" and the like.
 */
import { spawn } from 'node:child_process'
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildNarthex } from './build.js'
import { curl, curlMany, getText, run, RssPoller, vmHWM } from './measure.js'
import { dataDirs, readManifest } from './prepare.js'
import { Narthex, startUpstream } from './servers.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const RUN_DIR = join(DIRS.root, 'run-diagnose')
const [what = '', ...rest] = process.argv.slice(2)
if (!['ttfb', 'xz', 'rss', 'gc'].includes(what)) {
  console.error('usage: diagnose.ts ttfb | xz | rss [N…] | gc')
  process.exit(2)
}
const manifest = await readManifest(DIRS)
const build = await buildNarthex(ROOT, DIRS.root, {}, (m) => process.stderr.write(`[diagnose] ${m}\n`))
await rm(RUN_DIR, { recursive: true, force: true })
await mkdir(RUN_DIR, { recursive: true })
const upstream = await startUpstream(RUN_DIR, DIRS.cache)
const extra = process.env.NODE_EXTRA ? process.env.NODE_EXTRA.split(' ') : []
const load = async () => (await readFile('/proc/loadavg', 'utf8')).trim()

const start = (nodeArgs: string[] = []) =>
  Narthex.start({
    bin: build.bin,
    dir: join(RUN_DIR, 'narthex'),
    signingKeyFile: join(DIRS.root, 'narthex.key'),
    upstreamUrl: upstream.url,
    upstreamPublicKey: manifest.upstreamPublicKey,
    nodeArgs: [...nodeArgs, ...extra],
  })

async function narUrl(n: Narthex, hashPart: string): Promise<string> {
  const r = await getText(`${n.url}/${hashPart}.narinfo`)
  return `${n.url}/${/^URL: (.*)$/m.exec(r.text)![1]}`
}

async function cpuSeconds(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

async function childNamed(ppid: number, comm: string): Promise<number | undefined> {
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const st = await readFile(`/proc/${d}/stat`, 'utf8')
      if (st.includes(`(${comm})`) && Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === ppid) return Number(d)
    } catch {
      // gone
    }
  }
  return undefined
}

try {
  switch (what) {
    case 'ttfb': {
      const n = await start()
      try {
        const url = await narUrl(n, manifest.big.hashPart)
        const out = join(RUN_DIR, 'strace.txt')
        const st = spawn('strace', ['-f', '-tt', '-T', '-o', out, '-p', String(n.pid)], { stdio: 'ignore' })
        await sleep(1000)
        const c = await curl(url, manifest.big.fileSize)
        await sleep(300)
        st.kill('SIGINT')
        await sleep(500)
        const lines = (await readFile(out, 'utf8')).split('\n')
        const from = lines.findIndex((l) => /accept4\(.*\) = \d+/.test(l))
        const fd = /accept4\(.*\) = (\d+)/.exec(lines[from] ?? '')?.[1] ?? 'none'
        // The client's request, the temp file, the upstream request and answer, the first NAR bytes
        // written to the temp file, and the first bytes written to the client.
        const marks = [/accept4/, new RegExp(`read\\(${fd}, "GET`), /openat/, /write\(\d+, "GET/, /read\(\d+, "HTTP/, /nix-archive-1/, new RegExp(`write(v)?\\(${fd},`)]
        const interesting = lines.slice(from, from + 2000).filter((l) => marks.some((re) => re.test(l)))
        const firstToClient = interesting.findIndex((l) => new RegExp(`write(v)?\\(${fd},`).test(l))
        interesting.length = firstToClient >= 0 ? firstToClient + 1 : Math.min(interesting.length, 12)
        console.log(`cold fetch under strace: TTFB ${(c.ttfb * 1000).toFixed(1)} ms, total ${c.total.toFixed(2)} s; load ${await load()}`)
        console.log(`first events after accept (full trace: ${out}):`)
        for (const l of interesting) console.log(`  ${l.slice(0, 160)}`)
      } finally {
        await n.stop()
      }
      break
    }
    case 'xz': {
      for (let i = 0; i < 2; i++) {
        const n = await start()
        try {
          const url = await narUrl(n, manifest.xzbig.hashPart)
          const before = await cpuSeconds(n.pid)
          let xzPid: number | undefined
          let xzCpu = 0
          let done = false
          const deadline = Date.now() + 300_000
          const poll = (async () => {
            while (!done && Date.now() < deadline) {
              xzPid ??= await childNamed(n.pid, 'xz')
              if (xzPid) xzCpu = await cpuSeconds(xzPid).catch(() => xzCpu)
              await sleep(20)
            }
          })()
          const c = await curl(url, manifest.xzbig.fileSize)
          done = true
          await poll
          console.log(`cold xz fetch ${c.total.toFixed(2)} s: narthex CPU ${((await cpuSeconds(n.pid)) - before).toFixed(2)} s, its xz child ${xzCpu.toFixed(2)} s; load ${await load()}`)
        } finally {
          await n.stop()
        }
      }
      const file = join(DIRS.cache, manifest.xzbig.url)
      for (const cmd of [`xz -dc '${file}' | sha256sum`, `xz -dc '${file}' > /dev/null`]) {
        const p = await run('bash', ['-c', `TIMEFORMAT='%R s wall, %U s user, %S s sys'; time (${cmd} > /dev/null)`])
        console.log(`${cmd.replace(file, 'FILE')}: ${p.stderr.trim()}`)
      }
      break
    }
    case 'rss': {
      const counts = rest.length ? rest.map(Number) : [1, 16, 64]
      for (const clients of counts) {
        const n = await start()
        try {
          await sleep(500)
          const idle = ((await vmHWM(n.pid)) ?? 0) / 2 ** 20
          const url = await narUrl(n, manifest.big.hashPart)
          const poller = new RssPoller(() => [n.pid], 20)
          const r = await curlMany(url, clients, manifest.big.fileSize)
          const peak = (await poller.stop()) / 2 ** 20
          const hwm = ((await vmHWM(n.pid)) ?? 0) / 2 ** 20
          console.log(`${clients} client(s): RSS after start ${idle.toFixed(0)} MiB, peak ${Math.max(peak, hwm).toFixed(0)} MiB, done in ${(r.wallMs / 1000).toFixed(1)} s; load ${await load()}`)
        } finally {
          await n.stop()
        }
      }
      break
    }
    case 'gc': {
      const n = await start(['--trace-gc'])
      try {
        const url = await narUrl(n, manifest.big.hashPart)
        await curl(url, manifest.big.fileSize)
        await sleep(1000)
        const log = join(RUN_DIR, 'narthex', 'stdout.log')
        const before = (await readFile(log, 'utf8')).split('\n').length
        const speeds: string[] = []
        for (let i = 0; i < 3; i++) speeds.push((manifest.big.fileSize / (await curl(url, manifest.big.fileSize)).total / 1e9).toFixed(2))
        const lines = (await readFile(log, 'utf8')).split('\n').slice(before - 1)
        const ms = (kind: string) => {
          const ls = lines.filter((l) => l.includes(kind))
          return `${ls.length} (${ls.reduce((a, l) => a + Number(/, ([\d.]+) \/ [\d.]+ ms/.exec(l)?.[1] ?? 0), 0).toFixed(0)} ms)`
        }
        console.log(`3 warm fetches at ${speeds.join(', ')} GB/s: mark-compacts ${ms('Mark-Compact')}, scavenges ${ms('Scavenge')}; load ${await load()}`)
      } finally {
        await n.stop()
      }
      break
    }
  }
} finally {
  await upstream.stop()
}
