/**
 * Where narthex's CPU goes during the cold closure, by thread: a fresh narthex
 * (the build run.ts made, default settings) in front of the static upstream,
 * one `nix copy` of the 500-path closure, and utime/stime of every thread of
 * the process (`/proc/<pid>/task/<tid>/stat`, by thread name) and of its
 * exited children, before and after the copy (once idle).
 *
 *   node --import tsx bench/proxy/cpu-threads.ts [--worktree] [--perf] [--runs N] [--node-args "FLAGS"]
 *
 * `--perf`: `perf record -g` of the whole process during the copy (node runs
 * with `--perf-basic-prof`, so JavaScript frames have names); the report goes
 * to bench/.data/profiles/perf-closure.txt.
 */
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { buildNarthex } from './build.js'
import { runOk } from './measure.js'
import { dataDirs, readManifest } from './prepare.js'
import { Narthex, startUpstream } from './servers.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const RUN_DIR = join(DIRS.root, 'run-threads')
const say = (m: string) => process.stderr.write(`[cpu-threads] ${m}\n`)
const PERF = process.argv.includes('--perf')
const runsAt = process.argv.indexOf('--runs')
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 1
const argsAt = process.argv.indexOf('--node-args')
const NODE_ARGS = argsAt >= 0 ? process.argv[argsAt + 1]!.split(' ').filter(Boolean) : []
const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

const manifest = await readManifest(DIRS)
const build = await buildNarthex(ROOT, DIRS.root, { worktree: process.argv.includes('--worktree') }, say)
await rm(RUN_DIR, { recursive: true, force: true })
await mkdir(RUN_DIR, { recursive: true })
const upstream = await startUpstream(RUN_DIR, DIRS.cache)

interface Ticks {
  user: number
  sys: number
}

/** CPU ticks per thread name (summed over threads of one name), and of exited children. */
function threads(pid: number): Map<string, Ticks> {
  const out = new Map<string, Ticks>()
  const add = (name: string, user: number, sys: number) => {
    const t = out.get(name) ?? { user: 0, sys: 0 }
    t.user += user
    t.sys += sys
    out.set(name, t)
  }
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    } catch {
      continue
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    add(tid === String(pid) ? 'main' : name, Number(f[11]), Number(f[12]))
  }
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const g = f.slice(f.lastIndexOf(')') + 2).split(' ')
  add('(exited children)', Number(g[13]), Number(g[14]))
  return out
}

const paths = manifest.closureHashParts.length
const fmt = (ticks: number) => ((ticks * 1000) / HZ / paths).toFixed(2)
try {
  for (let r = 0; r < RUNS; r++) {
    const n = await Narthex.start({
      bin: build.bin,
      dir: join(RUN_DIR, 'narthex'),
      signingKeyFile: join(DIRS.root, 'narthex.key'),
      upstreamUrl: upstream.url,
      upstreamPublicKey: manifest.upstreamPublicKey,
      nodeArgs: [...(PERF ? ['--perf-basic-prof'] : []), ...NODE_ARGS],
    })
    try {
      await sleep(1000)
      const store = join(RUN_DIR, 'client-store')
      const env = {
        ...process.env,
        NIX_CONFIG: 'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0',
        XDG_CACHE_HOME: join(RUN_DIR, `xdg-${Date.now()}-${r}`),
      }
      const perfData = join(DIRS.root, 'profiles', 'perf-closure.data')
      if (PERF) await mkdir(dirname(perfData), { recursive: true })
      const perf = PERF ? spawn('perf', ['record', '-F', '499', '-g', '-p', String(n.pid), '-o', perfData], { stdio: 'ignore' }) : undefined
      if (perf) await sleep(500)
      const before = threads(n.pid)
      // The CPU against the NARs stored so far, every 500 ms: the later part shows the cost per path
      // once the code is compiled (the first paths of a fresh process pay for the JIT).
      const sum = (m: Map<string, Ticks>) => [...m.values()].reduce((a, t) => a + t.user + t.sys, 0)
      const trace: Array<{ stored: number; ticks: number }> = []
      const stored = () => readFileSync(n.logFile, 'utf8').split('NAR verified and stored').length - 1
      const sampler = setInterval(() => trace.push({ stored: stored(), ticks: sum(threads(n.pid)) - sum(before) }), 500)
      const p = await runOk('nix', ['copy', '--from', n.url, '--to', store, manifest.closureTop, '--option', 'trusted-public-keys', n.publicKey], { env, timeoutMs: 600_000 })
      await sleep(1500)
      clearInterval(sampler)
      const after = threads(n.pid)
      if (perf) {
        perf.kill('SIGINT')
        await new Promise((r) => perf.once('exit', r))
      }
      spawnSync('chmod', ['-R', 'u+w', store])
      await rm(store, { recursive: true, force: true })
      let total = 0
      const rows: string[] = []
      for (const [name, a] of after) {
        const b = before.get(name) ?? { user: 0, sys: 0 }
        const u = a.user - b.user
        const s = a.sys - b.sys
        total += u + s
        if (u + s > 0) rows.push(`  ${name.padEnd(20)} user ${fmt(u)}  sys ${fmt(s)} ms per path`)
      }
      process.stdout.write(
        `run ${r}${NODE_ARGS.length ? ` (${NODE_ARGS.join(' ')})` : ''}: nix copy ${(p.ms / 1000).toFixed(2)} s, narthex CPU ${fmt(total)} ms per path; load ${readFileSync('/proc/loadavg', 'utf8').trim()}\n${rows.join('\n')}\n`,
      )
      // Marginal CPU per stored NAR over each quarter of the closure.
      const quarters: string[] = []
      for (let q = 1; q <= 4; q++) {
        const from = trace.find((t) => t.stored >= ((q - 1) * paths) / 4) ?? trace[0]
        const to = trace.find((t) => t.stored >= (q * paths) / 4) ?? trace[trace.length - 1]
        if (from && to && to.stored > from.stored) quarters.push(`${((((to.ticks - from.ticks) * 1000) / HZ) / (to.stored - from.stored)).toFixed(2)}`)
      }
      process.stdout.write(`  CPU ms per stored NAR over the quarters of the copy: ${quarters.join(', ')}\n`)
      if (perf) {
        const rep = spawnSync('perf', ['report', '-i', perfData, '--no-children', '--sort', 'comm,dso,sym', '--stdio', '-g', 'none', '--percent-limit', '0.3'], {
          encoding: 'utf8',
          maxBuffer: 64 << 20,
        })
        const file = join(DIRS.root, 'profiles', 'perf-closure.txt')
        await writeFile(file, rep.stdout)
        say(`perf report: ${file}`)
      }
    } finally {
      await n.stop()
    }
  }
} finally {
  await upstream.stop()
}
