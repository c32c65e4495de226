/**
 * narthex against nginx proxy_cache, both in front of one static upstream.
 *
 *   npm --prefix bench run bench [-- --quick]
 *        [-- --only narinfo,warmnar,coldnar,herd,closure,closure-wan,cpu,xz,firstnarinfo,startup]
 *        [-- --runs N] [-- --cpu-prof] [-- --rev REV | --worktree] [-- --workers N|auto] [-- --startup-paths N]
 *        [-- --narthex-node-args "FLAGS"]
 *
 * See bench/README.md for what each scenario measures and bench/RESULTS.md for results.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, unlinkSync } from 'node:fs'
import { appendFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  busyFraction,
  contended,
  curl,
  curlMany,
  getAll,
  getText,
  median,
  run,
  runOk,
  RssPoller,
  cpuDuring,
  vmHWM,
  settled,
  waitQuiet,
  wrk,
  type LoadNote,
} from './measure.js'
import { dataDirs, prepare, type Manifest } from './prepare.js'
import { buildNarthex, type NarthexBuild } from './build.js'
import { Narthex, Nginx, WanProxy, startUpstream } from './servers.js'
import { BIG_STORE_COUNT } from './big-store.js'
import { scenarioFirstNarinfo, scenarioStartup, type SuiteContext } from './startup.js'
import { NIX_TEST_CONFIG } from '../../test/helpers/nix.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const RUN_DIR = join(DIRS.root, 'run')
const MiB = 1 << 20

// ---------------------------------------------------------------- args ----

const argv = process.argv.slice(2)
const flag = (f: string) => argv.includes(f)
const opt = (f: string) => {
  const i = argv.indexOf(f)
  return i >= 0 ? argv[i + 1] : undefined
}
const QUICK = flag('--quick')
const RUNS = Number(opt('--runs') ?? (QUICK ? 1 : 3))
const WRK_SECONDS = QUICK ? 5 : 10
const SCENARIOS = ['narinfo', 'warmnar', 'coldnar', 'herd', 'closure', 'closure-wan', 'cpu', 'xz', 'firstnarinfo', 'startup'] as const
/** A scenario of the suite (README.md describes each). */
export type Scenario = (typeof SCENARIOS)[number]
const ONLY = new Set((opt('--only') ?? SCENARIOS.join(',')).split(',') as Scenario[])
for (const s of ONLY) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}; one of ${SCENARIOS.join(', ')}`)
const CPU_PROF = flag('--cpu-prof')
/** Extra node flags for every narthex (an A/B test of a runtime setting), e.g. "--max-semi-space-size=2". */
const NARTHEX_NODE_ARGS = (opt('--narthex-node-args') ?? '').split(' ').filter(Boolean)
/** narthex's `workers` for the extra target `narthex-w` (0: leave it out; `auto`, the shipped setting, by default). */
const WORKERS: number | 'auto' = opt('--workers') === undefined || opt('--workers') === 'auto' ? 'auto' : Number(opt('--workers'))
if (WORKERS !== 'auto' && !(Number.isInteger(WORKERS) && WORKERS >= 0)) throw new Error('--workers takes auto or a count')
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 20) throw new Error('--runs takes 1..20')
/** Stored NARs in the startup scenario's data directory (fewer only to try the scenario out). */
const STARTUP_PATHS = Number(opt('--startup-paths') ?? BIG_STORE_COUNT)
if (!Number.isInteger(STARTUP_PATHS) || STARTUP_PATHS < 1000) throw new Error('--startup-paths takes a count of at least 1000')
/** The WAN-like upstream of closure-wan: first byte 30 ms late, 100 Mbit/s per connection. */
const WAN = { delayMs: 30, mbit: 100 }

const say = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)

// ------------------------------------------------------------- results ----

/** One measured value of one run, with the machine's load around it. */
export interface Sample {
  scenario: Scenario
  metric: string
  target: 'narthex' | 'narthex-w' | 'narthex-np' | 'nginx' | 'upstream' | 'reference'
  run: number
  value: number
  unit: string
  load: LoadNote
  extra?: Record<string, unknown>
}
const samples: Sample[] = []
const notes: string[] = []

function record(s: Omit<Sample, 'run'> & { run?: number }, run: number): void {
  samples.push({ ...s, run: s.run ?? run })
}

/** The samples a median is taken over: the uncontended ones when there are at least 2 (or all are), else all. */
function usable(scenario: string, metric: string, target: string): Sample[] {
  const all = samples.filter((s) => s.scenario === scenario && s.metric === metric && s.target === target)
  const clean = all.filter((s) => !contended(s.load))
  return clean.length >= Math.min(2, all.length) ? clean : all
}

function med(scenario: Scenario, metric: string, target: Sample['target']): number {
  return median(usable(scenario, metric, target).map((s) => s.value))
}

/** `median (min-max)` of the usable samples, or just the median of one. */
function spread(scenario: Scenario, metric: string, target: Sample['target'], d = 2): string {
  const v = usable(scenario, metric, target).map((s) => s.value)
  if (v.length === 0) return 'n/a'
  const m = f(median(v), d)
  return v.length === 1 ? m : `${m} (${f(Math.min(...v), d)}-${f(Math.max(...v), d)})`
}

// -------------------------------------------------------------- servers ----

let manifest: Manifest
let build: NarthexBuild
let upstream: Nginx
let narthex: Narthex | undefined
let nginx: Nginx | undefined
let counter = 0
const keyFile = join(DIRS.root, 'narthex.key')

async function stopServer(s: Narthex | Nginx | undefined): Promise<void> {
  if (!s) return
  stopping.add(s.child)
  await s.stop()
}

/**
 * For the scenarios that fetch a NAR's narinfo to learn its URL and then measure the NAR's own
 * download (3, 4, 6): with `prefetch.nars` on (the default), that narinfo request would start the
 * download, and the wait for a quiet machine before the measurement would let it finish.
 */
const NO_PREFETCH = { prefetchNars: false } as const

async function freshNarthex(label: string, extra: { prefetchNars?: boolean; workers?: number | 'auto'; upstreamUrl?: string } = {}): Promise<Narthex> {
  await stopServer(narthex)
  const dir = join(RUN_DIR, 'narthex')
  const nodeArgs = [...(CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', join(DIRS.root, 'profiles', label)] : []), ...NARTHEX_NODE_ARGS]
  narthex = await Narthex.start({
    bin: build.bin,
    dir,
    signingKeyFile: keyFile,
    upstreamUrl: upstream.url,
    upstreamPublicKey: manifest.upstreamPublicKey,
    nodeArgs,
    ...extra,
  })
  watch('narthex', narthex.child)
  counter++
  return narthex
}

let narthexW: Narthex | undefined
/** Exits of servers the benchmark did not ask for (by signal from outside, or a crash). */
const exits: string[] = []

/** Every watched server still running, so a failed scenario leaves none behind. */
const live = new Set<import('node:child_process').ChildProcess>()

function watch(what: string, child: import('node:child_process').ChildProcess): void {
  live.add(child)
  child.once('exit', (code, signal) => {
    live.delete(child)
    if (!stopping.has(child)) exits.push(`${what} (pid ${child.pid}) exited on its own at ${new Date().toISOString().slice(11, 19)} with ${signal ?? code}`)
  })
}
const stopping = new WeakSet<object>()

/** A second narthex with `workers: WORKERS` (node:cluster workers for the hot path). */
async function freshNarthexW(): Promise<Narthex> {
  await stopServer(narthexW)
  narthexW = await Narthex.start({
    bin: build.bin,
    dir: join(RUN_DIR, 'narthex-w'),
    signingKeyFile: keyFile,
    upstreamUrl: upstream.url,
    upstreamPublicKey: manifest.upstreamPublicKey,
    workers: WORKERS,
    nodeArgs: NARTHEX_NODE_ARGS,
  })
  watch('narthex (workers)', narthexW.child)
  return narthexW
}

async function freshNginx(upstreamUrl = upstream.url): Promise<Nginx> {
  await stopServer(nginx)
  const prefix = join(RUN_DIR, 'nginx-proxy')
  await rm(prefix, { recursive: true, force: true })
  nginx = await Nginx.start({
    template: join(HERE, 'nginx', 'proxy.conf'),
    prefix,
    vars: { CACHE: join(prefix, 'cache'), UPSTREAM_PORT: new URL(upstreamUrl).port },
  })
  watch('nginx proxy', nginx.child)
  return nginx
}

let wanProxy: WanProxy | undefined

/** SIGTERMs the watched servers still running but the upstream (those of a failed scenario), by their pids; SIGKILL after 20 s. */
async function stopLeftovers(): Promise<void> {
  await Promise.all(
    [...live].filter((child) => child !== upstream?.child).map(async (child) => {
      stopping.add(child)
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000)
      await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)))
      clearTimeout(t)
    }),
  )
}

async function stopAll(): Promise<void> {
  await wanProxy?.stop().catch(() => undefined)
  await stopServer(narthex).catch(() => undefined)
  await stopServer(narthexW).catch(() => undefined)
  await stopServer(nginx).catch(() => undefined)
  await stopServer(upstream).catch(() => undefined)
  await stopLeftovers().catch(() => undefined)
}

const narinfoPath = (hashPart: string) => `/${hashPart}.narinfo`

/** The NAR URL a proxy's narinfo names, fetched (and so admitted) now. */
async function narUrlVia(base: string, hashPart: string): Promise<{ url: string; fileSize: number; ms: number }> {
  const r = await getText(base + narinfoPath(hashPart))
  if (r.status !== 200) throw new Error(`${base}${narinfoPath(hashPart)}: ${r.status}`)
  const url = /^URL: (.*)$/m.exec(r.text)![1]!
  const size = /^FileSize: (.*)$/m.exec(r.text)
  const fileSize = size ? Number(size[1]) : NaN
  return { url: `${base}/${url}`, fileSize, ms: r.ms }
}

/** Bytes of the upstream's access log so far (a mark for {@link upstreamRequestsSince}). */
async function accessLogMark(): Promise<number> {
  return (await stat(join(RUN_DIR, 'upstream', 'access.log'))).size
}

async function upstreamRequestsSince(mark: number, urlPart: string): Promise<number> {
  await sleep(300)
  const text = (await readFile(join(RUN_DIR, 'upstream', 'access.log'))).subarray(mark).toString('utf8')
  return text.split('\n').filter((l) => l.includes(urlPart)).length
}

/** Runs `fn` once quiet, notes the load before and after. */
// Waiting for other workloads to calm down is bounded, per measurement and in total.
let waitBudgetMs = QUICK ? 45_000 : 90_000
const STARTED = Date.now()
// Past this, no extra runs are added for contended ones (the suite should stay under ~15 min).
const EXTRA_RUNS_UNTIL_MS = 12 * 60_000

async function measured<T>(fn: () => Promise<T>): Promise<{ value: T; load: LoadNote }> {
  const t = Date.now()
  const load = await waitQuiet(Math.max(0, Math.min(15_000, waitBudgetMs)))
  waitBudgetMs -= Math.max(0, Date.now() - t - 1000)
  const value = await fn()
  load.busyAfter = await busyFraction(1000)
  return { value, load }
}

const order = <T>(run: number, xs: T[]): T[] => (run % 2 === 0 ? xs : [...xs].reverse())

/**
 * Runs `body` RUNS times, plus one more run (not in --quick) when one of them
 * was contended, i.e. another workload was busy on the machine just before or
 * after a measurement; medians then leave contended runs out (see {@link med}).
 */
async function repeat(scenario: Scenario, body: (r: number) => Promise<void>, metrics?: string[], runs = RUNS): Promise<void> {
  let r = 0
  for (; r < runs; r++) await body(r)
  const anyContended = () => samples.some((s) => s.scenario === scenario && (!metrics || metrics.includes(s.metric)) && contended(s.load))
  if (!QUICK && runs === RUNS && anyContended() && Date.now() - STARTED < EXTRA_RUNS_UNTIL_MS) {
    say(`   ${scenario}: a run was contended by another workload; one extra run`)
    notes.push(`${scenario}: one extra run because another workload was busy around a measurement`)
    await body(r)
  }
}

// ------------------------------------------------------------ scenarios ----

const listFile = join(DIRS.root, 'narinfo-paths.txt')
const wrkScript = join(HERE, 'narinfo.lua')

async function warmNarinfos(base: string): Promise<void> {
  const urls = manifest.closureHashParts.map((h) => base + narinfoPath(h))
  await getAll(urls)
  await getAll(urls)
}

async function scenarioNarinfo(): Promise<void> {
  say(`1. warm narinfo: wrk -t2 -c64 -d${WRK_SECONDS}s over ${manifest.closureHashParts.length} narinfos`)
  const n = await freshNarthex('narinfo')
  const w = WORKERS !== 0 ? await freshNarthexW() : undefined
  const x = await freshNginx()
  await warmNarinfos(n.url)
  if (w) await warmNarinfos(w.url)
  await warmNarinfos(x.url)
  await warmNarinfos(upstream.url)
  // The warm-up's narinfos start NAR prefetches: measure once they are over.
  for (const s of [n, w]) if (s) say(`   ${s === n ? 'narthex' : 'narthex-w'} idle after ${((await settled(s.child.pid!)) / 1000).toFixed(1)} s`)
  const targets: Array<[Sample['target'], string]> = [
    ['narthex', n.url],
    ...(w ? [['narthex-w', w.url] as [Sample['target'], string]] : []),
    ['nginx', x.url],
    ['upstream', upstream.url],
  ]
  await repeat('narinfo', async (r) => {
    for (const [target, base] of order(r, targets)) {
      const { value, load } = await measured(() => wrk(base, listFile, wrkScript, { seconds: WRK_SECONDS }))
      const errs = value.err_connect + value.err_read + value.err_write + value.err_status + value.err_timeout
      if (errs > 0) notes.push(`narinfo run ${r} ${target}: ${errs} wrk errors`)
      record({ scenario: 'narinfo', metric: 'rps', target, value: value.rps, unit: 'req/s', load, extra: { ...value } }, r)
      record({ scenario: 'narinfo', metric: 'p99', target, value: value.p99_us / 1000, unit: 'ms', load }, r)
      record({ scenario: 'narinfo', metric: 'p50', target, value: value.p50_us / 1000, unit: 'ms', load }, r)
      say(`   run ${r} ${target}: ${value.rps.toFixed(0)} req/s, p50 ${(value.p50_us / 1000).toFixed(2)} ms, p99 ${(value.p99_us / 1000).toFixed(2)} ms (load ${load.load1}, busy ${(load.busyBefore * 100).toFixed(0)}%)`)
    }
  })
}

async function scenarioWarmNar(): Promise<void> {
  const big = manifest.big
  say(`2. warm NAR: ${(big.fileSize / MiB).toFixed(0)} MiB, curl -o /dev/null, sequential; and 4 clients at once`)
  const n = narthex ?? (await freshNarthex('warmnar'))
  const w = WORKERS !== 0 ? (narthexW ?? (await freshNarthexW())) : undefined
  const x = nginx ?? (await freshNginx())
  const viaN = await narUrlVia(n.url, big.hashPart)
  const viaW = w ? await narUrlVia(w.url, big.hashPart) : undefined
  const viaX = await narUrlVia(x.url, big.hashPart)
  // Populate the caches (and the page cache).
  for (const v of [viaN, viaW, viaX]) if (v) await curl(v.url, big.fileSize)
  for (const s of [n, w]) if (s) await settled(s.child.pid!)
  for (const v of [viaN, viaW, viaX]) if (v) await curl(v.url, big.fileSize)
  const targets: Array<[Sample['target'], string]> = [
    ['narthex', viaN.url],
    ...(viaW ? [['narthex-w', viaW.url] as [Sample['target'], string]] : []),
    ['nginx', viaX.url],
  ]
  const reps = QUICK ? 3 : 5
  for (let r = 0; r < reps; r++) {
    for (const [target, url] of order(r, [...targets, ['upstream', `${upstream.url}/${big.url}`] as [Sample['target'], string]])) {
      const { value, load } = await measured(() => curl(url, big.fileSize))
      record({ scenario: 'warmnar', metric: 'GBps', target, value: big.fileSize / value.total / 1e9, unit: 'GB/s', load }, r)
    }
  }
  for (let r = 0; r < Math.min(RUNS, 2); r++) {
    for (const [target, url] of order(r, targets)) {
      const { value, load } = await measured(() => curlMany(url, 4, big.fileSize))
      record({ scenario: 'warmnar', metric: 'GBps4', target, value: (4 * big.fileSize) / (value.wallMs / 1000) / 1e9, unit: 'GB/s', load }, r)
    }
  }
  for (const [t] of [...targets, ['upstream']] as Array<[Sample['target']]>) say(`   ${t}: ${med('warmnar', 'GBps', t).toFixed(2)} GB/s (1 client), ${t === 'upstream' ? '-' : med('warmnar', 'GBps4', t).toFixed(2)} GB/s (4 clients)`)
}

async function scenarioColdNar(): Promise<void> {
  const big = manifest.big
  say(`3. cold NAR: ${(big.fileSize / MiB).toFixed(0)} MiB, fresh narthex data dir / fresh nginx cache per run`)
  await repeat('coldnar', async (r) => {
    for (const target of order(r, ['narthex', 'nginx', 'upstream'] as const)) {
      let base: string
      if (target === 'narthex') base = (await freshNarthex('coldnar', NO_PREFETCH)).url
      else if (target === 'nginx') base = (await freshNginx()).url
      else base = upstream.url
      const via = await narUrlVia(base, big.hashPart)
      const { value, load } = await measured(() => curl(via.url, big.fileSize))
      record({ scenario: 'coldnar', metric: 'total', target, value: value.total, unit: 's', load }, r)
      record({ scenario: 'coldnar', metric: 'ttfb', target, value: value.ttfb * 1000, unit: 'ms', load }, r)
      record({ scenario: 'coldnar', metric: 'narinfo', target, value: via.ms, unit: 'ms', load }, r)
      if (target === 'narthex' && (await narthex!.logged('NAR verified and stored')).length !== 1) throw new Error('narthex did not verify and store the NAR')
      say(`   run ${r} ${target}: total ${value.total.toFixed(2)} s, TTFB ${(value.ttfb * 1000).toFixed(1)} ms, cold narinfo ${via.ms.toFixed(1)} ms`)
    }
  })
}

async function scenarioHerd(): Promise<void> {
  const big = manifest.big
  const N = 64
  say(`4. ${N} clients at once for one cold ${(big.fileSize / MiB).toFixed(0)} MiB NAR`)
  await repeat('herd', async (r) => {
    for (const target of order(r, ['narthex', 'nginx'] as const)) {
      const server = target === 'narthex' ? await freshNarthex('herd', NO_PREFETCH) : await freshNginx()
      const via = await narUrlVia(server.url, big.hashPart)
      const mark = await accessLogMark()
      const pids = target === 'narthex' ? () => [narthex!.pid] : () => nginx!.workerPids()
      const { value, load } = await measured(async () => {
        const poller = new RssPoller(pids, 50)
        const res = await curlMany(via.url, N, big.fileSize)
        const peak = await poller.stop()
        const hwm = target === 'narthex' ? ((await vmHWM(narthex!.pid)) ?? 0) : 0
        return { ...res, peak: Math.max(peak, hwm) }
      })
      const requests = await upstreamRequestsSince(mark, big.url)
      const totals = value.results.map((c) => c.total)
      const ttfbs = value.results.map((c) => c.ttfb)
      record({ scenario: 'herd', metric: 'upstreamRequests', target, value: requests, unit: 'requests', load }, r)
      record({ scenario: 'herd', metric: 'wall', target, value: value.wallMs / 1000, unit: 's', load }, r)
      record({ scenario: 'herd', metric: 'clientMedian', target, value: median(totals), unit: 's', load }, r)
      record({ scenario: 'herd', metric: 'ttfbMax', target, value: Math.max(...ttfbs) * 1000, unit: 'ms', load }, r)
      record({ scenario: 'herd', metric: 'peakRss', target, value: value.peak / MiB, unit: 'MiB', load }, r)
      say(
        `   run ${r} ${target}: ${requests} upstream request(s), all done in ${(value.wallMs / 1000).toFixed(2)} s, ` +
          `max TTFB ${(Math.max(...ttfbs) * 1000).toFixed(0)} ms, peak RSS ${(value.peak / MiB).toFixed(0)} MiB${target === 'nginx' ? ' (workers)' : ''}`,
      )
    }
  }, undefined, Math.min(RUNS, 2)) // 64 × 512 MiB per run: at most 2 runs, no extra one
}

/** The environment nix runs with (docs/TESTING.md) and a fresh client-side cache. */
async function nixEnv(): Promise<NodeJS.ProcessEnv> {
  const xdg = join(RUN_DIR, `xdg-${Date.now()}-${counter++}`)
  await mkdir(xdg, { recursive: true })
  return {
    ...process.env,
    NIX_CONFIG: NIX_TEST_CONFIG,
    XDG_CACHE_HOME: xdg,
  }
}

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return
  await run('chmod', ['-R', 'u+w', dir])
  await rm(dir, { recursive: true, force: true })
}

type ClosureTarget = 'narthex' | 'narthex-w' | 'narthex-np' | 'nginx' | 'upstream'

/**
 * `nix copy` of the cold closure through each target, from `upstreamUrl`: wall time, and the CPU
 * time of the proxy's whole process tree (all threads, cluster workers, children) per path.
 */
async function closureRuns(scenario: 'closure' | 'closure-wan', upstreamUrl: string): Promise<void> {
  const top = manifest.closureTop
  const paths = manifest.closureHashParts.length
  const targets: ClosureTarget[] = ['narthex', ...(WORKERS !== 0 ? (['narthex-w'] as const) : []), 'narthex-np', 'nginx', 'upstream']
  await repeat(scenario, async (r) => {
    for (const target of order(r, targets)) {
      let base: string
      let key: string
      let pid: (() => number) | undefined
      if (target === 'narthex' || target === 'narthex-w' || target === 'narthex-np') {
        const n = await freshNarthex(scenario, { ...(target === 'narthex-np' ? { prefetchNars: false } : {}), upstreamUrl, ...(target === 'narthex-w' ? { workers: WORKERS } : {}) })
        base = n.url
        key = n.publicKey
        pid = () => n.pid
      } else if (target === 'nginx') {
        const x = await freshNginx(upstreamUrl)
        base = x.url
        key = manifest.upstreamPublicKey
        pid = () => x.child.pid!
      } else {
        base = upstreamUrl
        key = manifest.upstreamPublicKey
      }
      const store = join(RUN_DIR, 'client-store')
      await removeTree(store)
      const env = await nixEnv()
      const copy = () => runOk('nix', ['copy', '--from', base, '--to', store, top, '--option', 'trusted-public-keys', key], { env, timeoutMs: 600_000 })
      const { value, load } = await measured(async () => (pid ? cpuDuring(pid, copy, { settleMs: 300 }) : { value: await copy(), cpuS: NaN, processes: 0, settledMs: 0 }))
      const got = (await readdir(join(store, 'nix', 'store'))).filter((e) => !e.startsWith('.')).length
      if (got !== paths) throw new Error(`${target}: nix copy left ${got} paths, expected ${paths}`)
      await removeTree(store)
      await rm(env.XDG_CACHE_HOME!, { recursive: true, force: true })
      record({ scenario, metric: 'wall', target, value: value.value.ms / 1000, unit: 's', load }, r)
      const cpu = pid ? ` (CPU ${value.cpuS.toFixed(2)} s over ${value.processes} process(es), ${((value.cpuS * 1000) / paths).toFixed(2)} ms per path)` : ''
      if (pid) {
        record({ scenario, metric: 'cpuPerPath', target, value: (value.cpuS * 1000) / paths, unit: 'ms', load, extra: { cpuS: value.cpuS, processes: value.processes, settledMs: value.settledMs } }, r)
      }
      say(`   run ${r} ${target}: ${(value.value.ms / 1000).toFixed(2)} s${cpu}`)
    }
  })
}

async function scenarioClosure(): Promise<void> {
  say(`5. nix copy of a cold closure of ${manifest.closureHashParts.length} paths (and CPU per cold path)`)
  await closureRuns('closure', upstream.url)
}

/** The CPU figures come from the closure runs; alone, `cpu` runs them. */
async function scenarioCpu(): Promise<void> {
  if (ONLY.has('closure')) return
  say(`cpu: CPU per cold path, measured on the cold closure (scenario 5)`)
  await closureRuns('closure', upstream.url)
}

async function scenarioClosureWan(): Promise<void> {
  say(`5w. nix copy of the cold closure from a WAN-like upstream (simulated on loopback: first byte +${WAN.delayMs} ms, ${WAN.mbit} Mbit/s per connection)`)
  await wanProxy?.stop()
  wanProxy = await WanProxy.start({ script: join(HERE, 'wan-proxy.mjs'), upstreamUrl: upstream.url, ...WAN, logFile: join(RUN_DIR, 'wan-proxy.log') })
  watch('wan-proxy', wanProxy.child)
  try {
    const t0 = performance.now()
    const probe = await getText(`${wanProxy.url}/nix-cache-info`)
    if (probe.status !== 200 || probe.ms < WAN.delayMs) throw new Error(`wan-proxy: status ${probe.status} after ${probe.ms.toFixed(1)} ms`)
    say(`   wan-proxy at ${wanProxy.url}: nix-cache-info in ${(performance.now() - t0).toFixed(1)} ms`)
    await closureRuns('closure-wan', wanProxy.url)
  } finally {
    stopping.add(wanProxy.child)
    await wanProxy.stop()
    wanProxy = undefined
  }
}

async function scenarioXz(): Promise<void> {
  const xz = manifest.xzbig
  const file = join(DIRS.cache, xz.url)
  say(`6. xz verification: ${(xz.fileSize / MiB).toFixed(0)} MiB xz file (${(xz.narSize / MiB).toFixed(0)} MiB NAR)`)
  await repeat(
    'xz',
    async (r) => {
      const ref = await measured(() => runOk('sh', ['-c', `xz -dc '${file}' | sha256sum`], { timeoutMs: 300_000 }))
      record({ scenario: 'xz', metric: 'fetch', target: 'reference', value: ref.value.ms / 1000, unit: 's', load: ref.load }, r)
      for (const target of order(r, ['narthex', 'nginx'] as const)) {
        const base = target === 'narthex' ? (await freshNarthex('xz', NO_PREFETCH)).url : (await freshNginx()).url
        const via = await narUrlVia(base, xz.hashPart)
        const { value, load } = await measured(() => curl(via.url, xz.fileSize))
        record({ scenario: 'xz', metric: 'fetch', target, value: value.total, unit: 's', load }, r)
        say(`   run ${r} ${target}: cold fetch ${value.total.toFixed(2)} s (xz -dc | sha256sum: ${(ref.value.ms / 1000).toFixed(2)} s)`)
      }
    },
    ['fetch'],
  )
  // narthex's narinfo p99 (wrk, as in scenario 1) idle, then while it decompresses and verifies the xz NAR.
  const secs = QUICK ? 4 : 5
  await repeat(
    'xz',
    async (r) => {
      const base = (await freshNarthex('xz-p99', NO_PREFETCH)).url
      await warmNarinfos(base)
      const via = await narUrlVia(base, xz.hashPart)
      const idle = await measured(() => wrk(base, listFile, wrkScript, { seconds: secs }))
      const busy = await measured(async () => {
        const t0 = performance.now()
        let fetchEnd = 0
        const fetching = curl(via.url, xz.fileSize).then((c) => {
          fetchEnd = performance.now()
          return c
        })
        await sleep(300)
        const w = await wrk(base, listFile, wrkScript, { seconds: secs })
        const wrkEnd = performance.now()
        await fetching
        return { w, overlapped: fetchEnd >= wrkEnd, fetchS: (fetchEnd - t0) / 1000 }
      })
      if (!busy.value.overlapped) notes.push(`xz p99 run ${r}: the fetch ended before wrk did`)
      record({ scenario: 'xz', metric: 'p99idle', target: 'narthex', value: idle.value.p99_us / 1000, unit: 'ms', load: idle.load }, r)
      record({ scenario: 'xz', metric: 'p99busy', target: 'narthex', value: busy.value.w.p99_us / 1000, unit: 'ms', load: busy.load }, r)
      record({ scenario: 'xz', metric: 'rpsidle', target: 'narthex', value: idle.value.rps, unit: 'req/s', load: idle.load }, r)
      record({ scenario: 'xz', metric: 'rpsbusy', target: 'narthex', value: busy.value.w.rps, unit: 'req/s', load: busy.load }, r)
      record({ scenario: 'xz', metric: 'fetchUnderLoad', target: 'narthex', value: busy.value.fetchS, unit: 's', load: busy.load }, r)
      say(
        `   run ${r} narthex: narinfo p99 idle ${(idle.value.p99_us / 1000).toFixed(2)} ms (${idle.value.rps.toFixed(0)} req/s), ` +
          `during the xz fetch ${(busy.value.w.p99_us / 1000).toFixed(2)} ms (${busy.value.w.rps.toFixed(0)} req/s; the fetch took ${busy.value.fetchS.toFixed(1)} s${busy.value.overlapped ? '' : ', ENDED BEFORE wrk'})`,
      )
    },
    ['p99idle', 'p99busy'],
  )
}

// ---------------------------------------------------------------- table ----

interface Row {
  what: string
  narthex: string
  nginx: string
  other: string
  ratio: string
  target: string
  met: boolean | undefined
}

const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a')

function table(): Row[] {
  const rows: Row[] = []
  const has = (s: Scenario) => ONLY.has(s)
  if (has('narinfo')) {
    const n = med('narinfo', 'rps', 'narthex')
    const x = med('narinfo', 'rps', 'nginx')
    rows.push({ what: '1. warm narinfo req/s (wrk -c64)', narthex: f(n, 0), nginx: f(x, 0), other: `upstream ${f(med('narinfo', 'rps', 'upstream'), 0)}`, ratio: f(n / x), target: '≥ 1.0', met: n / x >= 1.0 })
    const nw = med('narinfo', 'rps', 'narthex-w')
    if (Number.isFinite(nw)) rows.push({ what: `1. … narthex with workers: ${WORKERS}`, narthex: f(nw, 0), nginx: f(x, 0), other: `p99 ${f(med('narinfo', 'p99', 'narthex-w'))} ms`, ratio: f(nw / x), target: '≥ 1.0', met: nw / x >= 1.0 })
    const np = med('narinfo', 'p99', 'narthex')
    const xp = med('narinfo', 'p99', 'nginx')
    const p50p99 = (t: Sample['target']) => `${f(med('narinfo', 'p50', t))} / ${f(med('narinfo', 'p99', t))}`
    rows.push({ what: '1. warm narinfo p50 / p99 latency (ms)', narthex: p50p99('narthex'), nginx: p50p99('nginx'), other: `upstream ${p50p99('upstream')}`, ratio: `p99 ${f(np / xp)}`, target: '(report)', met: undefined })
    if (Number.isFinite(nw)) {
      const wp = med('narinfo', 'p99', 'narthex-w')
      rows.push({ what: `1. … p50 / p99 with workers: ${WORKERS} (ms)`, narthex: p50p99('narthex-w'), nginx: p50p99('nginx'), other: '', ratio: `p99 ${f(wp / xp)}`, target: '(report)', met: undefined })
    }
  }
  if (has('warmnar')) {
    const n = med('warmnar', 'GBps', 'narthex')
    const x = med('warmnar', 'GBps', 'nginx')
    rows.push({ what: '2. warm NAR 512 MiB, 1 client (GB/s)', narthex: f(n), nginx: f(x), other: `upstream ${f(med('warmnar', 'GBps', 'upstream'))}`, ratio: f(n / x), target: '≥ 0.9', met: n / x >= 0.9 })
    const nw = med('warmnar', 'GBps', 'narthex-w')
    if (Number.isFinite(nw)) rows.push({ what: `2. … narthex with workers: ${WORKERS}`, narthex: f(nw), nginx: f(x), other: '', ratio: f(nw / x), target: '≥ 0.9', met: nw / x >= 0.9 })
    const n4 = med('warmnar', 'GBps4', 'narthex')
    const x4 = med('warmnar', 'GBps4', 'nginx')
    rows.push({ what: '2. warm NAR 512 MiB, 4 clients (GB/s total)', narthex: f(n4), nginx: f(x4), other: Number.isFinite(nw) ? `narthex workers: ${WORKERS}: ${f(med('warmnar', 'GBps4', 'narthex-w'))}` : '', ratio: f(n4 / x4), target: '(report)', met: undefined })
  }
  if (has('coldnar')) {
    const n = med('coldnar', 'total', 'narthex')
    const x = med('coldnar', 'total', 'nginx')
    rows.push({ what: '3. cold NAR 512 MiB total (s)', narthex: f(n), nginx: f(x), other: `upstream ${f(med('coldnar', 'total', 'upstream'))}`, ratio: f(n / x), target: '≤ 1.2', met: n / x <= 1.2 })
    const nt = med('coldnar', 'ttfb', 'narthex')
    const xt = med('coldnar', 'ttfb', 'nginx')
    const ut = med('coldnar', 'ttfb', 'upstream')
    rows.push({ what: '3. cold NAR TTFB (ms)', narthex: f(nt), nginx: f(xt), other: `upstream ${f(ut)}`, ratio: `+${f(nt - ut)} ms vs upstream`, target: '≤ upstream + 5 ms', met: nt - ut <= 5 })
  }
  if (has('herd')) {
    const nr = Math.max(...samples.filter((s) => s.scenario === 'herd' && s.metric === 'upstreamRequests' && s.target === 'narthex').map((s) => s.value))
    const xr = Math.max(...samples.filter((s) => s.scenario === 'herd' && s.metric === 'upstreamRequests' && s.target === 'nginx').map((s) => s.value))
    rows.push({ what: '4. 64 clients, cold NAR: upstream requests (max over runs)', narthex: String(nr), nginx: String(xr), other: '', ratio: '', target: '= 1', met: nr === 1 })
    const n = med('herd', 'wall', 'narthex')
    const x = med('herd', 'wall', 'nginx')
    rows.push({ what: '4. 64 clients: all done (s)', narthex: f(n), nginx: f(x), other: '', ratio: f(n / x), target: '(report)', met: undefined })
    rows.push({
      what: '4. 64 clients: slowest TTFB (ms)',
      narthex: f(med('herd', 'ttfbMax', 'narthex'), 0),
      nginx: f(med('herd', 'ttfbMax', 'nginx'), 0),
      other: '',
      ratio: '',
      target: '(report)',
      met: undefined,
    })
    const rss = Math.max(...samples.filter((s) => s.scenario === 'herd' && s.metric === 'peakRss' && s.target === 'narthex').map((s) => s.value))
    rows.push({ what: '4. 64 clients: narthex peak RSS (MiB, max over runs)', narthex: f(rss, 0), nginx: `${f(med('herd', 'peakRss', 'nginx'), 0)} (workers)`, other: '', ratio: '', target: '< 150 MiB', met: rss < 150 })
  }
  const closureRows = (sc: 'closure' | 'closure-wan', label: string, goal: number) => {
    const n = med(sc, 'wall', 'narthex')
    const x = med(sc, 'wall', 'nginx')
    rows.push({ what: `${label} (s)`, narthex: spread(sc, 'wall', 'narthex'), nginx: spread(sc, 'wall', 'nginx'), other: `upstream ${spread(sc, 'wall', 'upstream')}`, ratio: f(n / x), target: `≤ ${goal}`, met: n / x <= goal })
    for (const [t, what] of [['narthex-w', `workers: ${WORKERS}`], ['narthex-np', '`prefetch.nars: false`']] as const) {
      const v = med(sc, 'wall', t)
      if (Number.isFinite(v)) rows.push({ what: `… narthex with ${what}`, narthex: spread(sc, 'wall', t), nginx: f(x), other: '', ratio: f(v / x), target: `≤ ${goal}`, met: v / x <= goal })
    }
  }
  const cpuRows = (sc: 'closure' | 'closure-wan', label: string) => {
    const x = med(sc, 'cpuPerPath', 'nginx')
    for (const [t, what] of [['narthex', ''], ['narthex-w', ` (workers: ${WORKERS})`], ['narthex-np', ' (`prefetch.nars: false`)']] as const) {
      const v = med(sc, 'cpuPerPath', t)
      if (!Number.isFinite(v)) continue
      rows.push({ what: `${label}${what}: CPU ms per cold path (narinfo + NAR), whole process tree`, narthex: spread(sc, 'cpuPerPath', t, 3), nginx: spread(sc, 'cpuPerPath', 'nginx', 3), other: '', ratio: f(v / x), target: '≤ 2 ms', met: v <= 2 })
    }
  }
  if (has('closure')) closureRows('closure', `5. nix copy, cold closure of ${manifest.closureHashParts.length} paths`, 0.8)
  if (has('closure-wan')) closureRows('closure-wan', `5w. same closure from a WAN-like upstream (simulated on loopback: +${WAN.delayMs} ms first byte, ${WAN.mbit} Mbit/s per connection)`, 0.5)
  if (has('closure') || has('cpu')) cpuRows('closure', 'cpu. closure')
  if (has('closure-wan')) cpuRows('closure-wan', 'cpu. closure-wan')
  if (has('xz')) {
    const n = med('xz', 'fetch', 'narthex')
    const ref = med('xz', 'fetch', 'reference')
    rows.push({ what: '6. xz NAR cold fetch (s) vs `xz -dc \\| sha256sum`', narthex: f(n), nginx: f(med('xz', 'fetch', 'nginx')), other: `xz \\| sha256sum ${f(ref)}`, ratio: `${f(ref / n)} of xz \\| sha256sum`, target: '≥ 0.9', met: ref / n >= 0.9 })
    rows.push({
      what: '6. narinfo p99 idle → while verifying the xz NAR (ms)',
      narthex: `${f(med('xz', 'p99idle', 'narthex'))} → ${f(med('xz', 'p99busy', 'narthex'))}`,
      nginx: has('narinfo') ? `idle ${f(med('narinfo', 'p99', 'nginx'))} (scenario 1)` : '',
      other: `req/s ${f(med('xz', 'rpsidle', 'narthex'), 0)} → ${f(med('xz', 'rpsbusy', 'narthex'), 0)}`,
      ratio: `×${f(med('xz', 'p99busy', 'narthex') / med('xz', 'p99idle', 'narthex'))} busy:idle`,
      target: '(report)',
      met: undefined,
    })
  }
  if (has('firstnarinfo')) {
    const x = med('firstnarinfo', 'first', 'nginx')
    for (const [t, what] of [['narthex', ''], ['narthex-w', ` (workers: ${WORKERS})`]] as const) {
      const v = med('firstnarinfo', 'first', t)
      if (!Number.isFinite(v)) continue
      rows.push({ what: `7. first narinfo right after start-up, populated store: its latency (ms)${what}`, narthex: spread('firstnarinfo', 'first', t), nginx: spread('firstnarinfo', 'first', 'nginx'), other: `ready after ${spread('firstnarinfo', 'ready', t, 0)} ms (nginx ${spread('firstnarinfo', 'ready', 'nginx', 0)})`, ratio: f(v / x), target: '≤ 5 ms', met: v <= 5 })
      const st = med('firstnarinfo', 'startToFirst', t) / med('firstnarinfo', 'startToFirst', 'nginx')
      rows.push({ what: `7. … spawn to first answer (ms)${what}`, narthex: spread('firstnarinfo', 'startToFirst', t, 0), nginx: spread('firstnarinfo', 'startToFirst', 'nginx', 0), other: '', ratio: f(st), target: '(report)', met: undefined })
    }
  }
  if (has('startup')) {
    for (const [when, label, goal] of [['clean', 'after a clean shutdown', 0.5], ['kill', 'after SIGKILL', 1]] as const) {
      const a = med('startup', `${when}Narinfo`, 'narthex')
      const b = med('startup', `${when}Healthz`, 'narthex')
      rows.push({ what: `8. start-up with ${STARTUP_PATHS.toLocaleString("en")} stored NARs ${label}: spawn → first narinfo answered (s)`, narthex: spread('startup', `${when}Narinfo`, 'narthex', 3), nginx: '', other: `/healthz ${spread('startup', `${when}Healthz`, 'narthex', 3)} s`, ratio: '', target: `≤ ${goal} s (both)`, met: Math.max(a, b) <= goal })
    }
    rows.push({ what: `8. … background repair after SIGKILL, while serving (s)`, narthex: spread('startup', 'killRepair', 'narthex', 1), nginx: '', other: '', ratio: '', target: '(report)', met: undefined })
  }
  return rows
}

function markdown(rows: Row[], meta: Record<string, string>): string {
  const out: string[] = []
  out.push(`## Run of ${meta.date}`, '')
  for (const [k, v] of Object.entries(meta)) out.push(`- ${k}: ${v}`)
  out.push('', '| scenario | narthex | nginx | reference | narthex:nginx | target | met |', '|---|---|---|---|---|---|---|')
  for (const r of rows) out.push(`| ${r.what} | ${r.narthex} | ${r.nginx} | ${r.other} | ${r.ratio} | ${r.target} | ${r.met === undefined ? '' : r.met ? 'yes' : '**no**'} |`)
  out.push('', '### Raw medians', '', '| scenario | metric | target | median | unit | runs | values | load1 per run | busy% before/after per run |', '|---|---|---|---|---|---|---|---|---|')
  const keys = [...new Set(samples.map((s) => `${s.scenario}\t${s.metric}\t${s.target}`))]
  for (const k of keys) {
    const [scenario, metric, target] = k.split('\t')
    const ss = samples.filter((s) => s.scenario === scenario && s.metric === metric && s.target === target)
    const v = ss.map((s) => s.value)
    const used = usable(scenario!, metric!, target!)
    out.push(
      `| ${scenario} | ${metric} | ${target} | ${f(median(used.map((s) => s.value)), 3)}${used.length < ss.length ? ` (${used.length} uncontended)` : ''} | ${ss[0]!.unit} | ${v.length} | ${v.map((x) => f(x, 3)).join(', ')} | ${ss.map((s) => f(s.load.load1)).join(', ')} | ${ss
        .map((s) => `${f(s.load.busyBefore * 100, 0)}/${f((s.load.busyAfter ?? 0) * 100, 0)}${contended(s.load) ? '⚠' : ''}`)
        .join(', ')} |`,
    )
  }
  if (notes.length) out.push('', '### Notes', '', ...notes.map((n) => `- ${n}`))
  return out.join('\n') + '\n'
}

// ----------------------------------------------------------------- main ----

function version(cmd: string, args: string[]): string {
  const p = spawnSync(cmd, args, { encoding: 'utf8' })
  return `${p.stdout ?? ''}${p.stderr ?? ''}`.trim().split('\n')[0] || 'unknown'
}

const LOCK = join(DIRS.root, 'run.pid')

/** One run at a time: a second one would remove the first one's run directory (and builds) under it. */
async function claimDataDir(): Promise<void> {
  const other = Number((await readFile(LOCK, 'utf8').catch(() => '')).trim())
  if (other && other !== process.pid) {
    let alive = true
    try {
      process.kill(other, 0)
    } catch {
      alive = false
    }
    if (alive) throw new Error(`another benchmark run (pid ${other}, ${LOCK}) is using ${DIRS.root}; wait for it to end`)
  }
  await mkdir(DIRS.root, { recursive: true })
  await writeFile(LOCK, String(process.pid))
  process.once('exit', () => {
    try {
      if (readFileSync(LOCK, 'utf8').trim() === String(process.pid)) unlinkSync(LOCK)
    } catch {
      // already gone
    }
  })
}

async function main(): Promise<void> {
  const t0 = Date.now()
  for (const tool of ['nix', 'nginx', 'wrk', 'curl', 'xz', 'sha256sum']) {
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) {
      throw new Error(`${tool} is missing: apt-get install -y nix-bin nginx wrk curl xz-utils (see bench/README.md)`)
    }
  }
  await claimDataDir()
  build = await buildNarthex(ROOT, DIRS.root, { rev: opt('--rev'), worktree: flag('--worktree') }, say)
  manifest = await prepare(BENCH, say)
  await writeFile(listFile, manifest.closureHashParts.map(narinfoPath).join('\n') + '\n')
  await rm(RUN_DIR, { recursive: true, force: true })
  await mkdir(RUN_DIR, { recursive: true })
  // The upstream's files in the page cache, so the first cold run does not also read the disk.
  await runOk('sh', ['-c', `cat '${join(DIRS.cache, manifest.big.url)}' '${join(DIRS.cache, manifest.xzbig.url)}' > /dev/null`])
  upstream = await startUpstream(RUN_DIR, DIRS.cache)
  watch('upstream nginx', upstream.child)
  say(`upstream (nginx, static) at ${upstream.url}; runs per scenario: ${RUNS}${QUICK ? ' (quick)' : ''}`)

  const onSignal = () => {
    say('interrupted: stopping servers')
    void stopAll().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  const ctx: SuiteContext = {
    bin: build.bin,
    benchDir: BENCH,
    runDir: RUN_DIR,
    keyFile,
    upstreamUrl: upstream.url,
    upstreamPublicKey: manifest.upstreamPublicKey,
    closureHashParts: manifest.closureHashParts,
    nginxTemplate: join(HERE, 'nginx', 'proxy.conf'),
    nodeArgs: NARTHEX_NODE_ARGS,
    workers: WORKERS,
    quick: QUICK,
    runs: RUNS,
    bigStoreCount: STARTUP_PATHS,
    record,
    measured,
    repeat,
    order,
    say,
    note: (msg) => notes.push(msg),
    watch,
    expectExit: (child) => stopping.add(child),
    upstreamRequestsSince,
    accessLogMark,
  }
  const bodies: Record<Scenario, () => Promise<void>> = {
    narinfo: scenarioNarinfo,
    warmnar: scenarioWarmNar,
    coldnar: scenarioColdNar,
    herd: scenarioHerd,
    closure: scenarioClosure,
    'closure-wan': scenarioClosureWan,
    cpu: scenarioCpu,
    xz: scenarioXz,
    firstnarinfo: () => scenarioFirstNarinfo(ctx),
    startup: () => scenarioStartup(ctx),
  }
  try {
    for (const scenario of SCENARIOS) {
      if (!ONLY.has(scenario)) continue
      // A scenario that fails (a server killed from outside: this machine is shared) is run once
      // more from scratch; a second failure leaves it out of the table, and the run goes on.
      for (let attempt = 1; ; attempt++) {
        try {
          await bodies[scenario]()
          break
        } catch (err) {
          const why = `${scenario}: attempt ${attempt} failed: ${(err as Error).message.split('\n')[0]}${exits.length ? ` (exits: ${exits.join('; ')})` : ''}`
          say(why)
          notes.push(why)
          exits.length = 0
          for (let i = samples.length - 1; i >= 0; i--) if (samples[i]!.scenario === scenario) samples.splice(i, 1)
          await stopServer(narthex).catch(() => undefined)
          await stopServer(narthexW).catch(() => undefined)
          await stopServer(nginx).catch(() => undefined)
          await wanProxy?.stop().catch(() => undefined)
          await stopLeftovers().catch(() => undefined)
          narthex = narthexW = nginx = undefined
          wanProxy = undefined
          if (attempt >= 2) break
        }
      }
    }
  } finally {
    await stopAll()
  }

  if (exits.length) notes.push(`servers that exited on their own: ${exits.join('; ')}`)
  const rows = table()
  const meta: Record<string, string> = {
    date: new Date().toISOString(),
    command: `npm --prefix bench run bench -- ${argv.join(' ')}`.trim(),
    machine: `${cpus().length} CPUs (nproc ${version('nproc', [])}), ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM`,
    versions: `node ${process.version}; ${version('nginx', ['-v'])}; ${version('wrk', ['--version'])}; ${version('nix', ['--version'])}; ${version('xz', ['--version'])}; ${version('curl', ['--version'])}`,
    narthex: `${build.label}${NARTHEX_NODE_ARGS.length ? `, run with node ${NARTHEX_NODE_ARGS.join(' ')}` : ''}`,
    'runs per scenario': String(RUNS),
    'wall time': `${((Date.now() - t0) / 1000).toFixed(0)} s`,
    'load average at the end': (await readFile('/proc/loadavg', 'utf8')).trim(),
  }
  if (CPU_PROF) meta['cpu profiles'] = `${join(DIRS.root, 'profiles')} (narthex ran with --cpu-prof: figures are not comparable)`
  const md = markdown(rows, meta)
  const resultsDir = join(DIRS.root, 'results')
  await mkdir(resultsDir, { recursive: true })
  const stamp = meta.date!.replace(/[:.]/g, '-')
  await writeFile(join(resultsDir, `${stamp}.json`), JSON.stringify({ meta, rows, samples, notes }, null, 2))
  await writeFile(join(resultsDir, `${stamp}.md`), md)
  await appendFile(join(resultsDir, 'history.md'), md + '\n')
  process.stdout.write(md)
  say(`results: ${join(resultsDir, `${stamp}.md`)} (and .json); took ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  // Keep-alive sockets of fetch() would hold the process a few seconds more.
  process.exit(0)
}

main().catch(async (err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`)
  await stopAll()
  process.exit(1)
})
