/**
 * Measuring tools: wrk, curl, wall clocks, resident memory, CPU time of a
 * process tree, start-up probes, and how busy the machine is (other tests may
 * share these 2 cores).
 */
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { get as httpGet } from 'node:http'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Proc {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/** Runs a command (no shell unless `cmd` is `sh`), killed after `timeoutMs`. */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, timeout: opts.timeoutMs ?? 300_000, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (c: Buffer) => out.push(c))
    child.stderr.on('data', (c: Buffer) => err.push(c))
    child.on('error', reject)
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: performance.now() - t0 }),
    )
  })
}

export async function runOk(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<Proc> {
  const p = await run(cmd, args, opts)
  if (p.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${p.code}: ${p.stderr.slice(-2000)}`)
  return p
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

// ---------------------------------------------------------------- load ----

async function cpuTimes(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = v[3]! + (v[4] ?? 0)
  const total = v.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

/** The 1, 5 and 15 minute load averages. */
export async function loadavg(): Promise<[number, number, number]> {
  const f = (await readFile('/proc/loadavg', 'utf8')).split(' ').map(Number)
  return [f[0]!, f[1]!, f[2]!]
}

/** Fraction of all CPUs busy over the next `ms` (0..1). */
export async function busyFraction(ms = 1000): Promise<number> {
  const a = await cpuTimes()
  await sleep(ms)
  const b = await cpuTimes()
  return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0
}

export interface LoadNote {
  /** /proc/loadavg 1-minute value when the run started. */
  load1: number
  /** CPU busy fraction in the idle second before the run (our servers idle: anything here is someone else). */
  busyBefore: number
  /** Same, in the second after the run. */
  busyAfter?: number
}

/** Above this idle-time busy fraction, another workload shares the machine. */
export const BUSY_LIMIT = 0.25

/**
 * Waits (at most `maxWaitMs`) for the machine to be quiet: a second with less
 * than {@link BUSY_LIMIT} of the CPUs busy. Returns the last reading.
 */
export async function waitQuiet(maxWaitMs = 30_000): Promise<LoadNote> {
  const deadline = Date.now() + maxWaitMs
  for (;;) {
    const busy = await busyFraction(1000)
    if (busy < BUSY_LIMIT || Date.now() > deadline) return { load1: (await loadavg())[0], busyBefore: busy }
  }
}

export function contended(n: LoadNote): boolean {
  return n.busyBefore >= BUSY_LIMIT || (n.busyAfter ?? 0) >= BUSY_LIMIT
}

// ----------------------------------------------------------------- wrk ----

export interface WrkResult {
  requests: number
  duration_us: number
  bytes: number
  p50_us: number
  p90_us: number
  p99_us: number
  max_us: number
  mean_us: number
  err_connect: number
  err_read: number
  err_write: number
  err_status: number
  err_timeout: number
  rps: number
}

/** wrk with the narinfo script (round-robin over the paths in `listFile`). */
export async function wrk(url: string, listFile: string, script: string, opts: { threads?: number; connections?: number; seconds?: number } = {}): Promise<WrkResult> {
  const { threads = 2, connections = 64, seconds = 10 } = opts
  const p = await runOk('wrk', [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', script, url], {
    env: { ...process.env, NARINFO_LIST: listFile },
    timeoutMs: (seconds + 30) * 1000,
  })
  const line = p.stdout.split('\n').find((l) => l.startsWith('WRKJSON '))
  if (!line) throw new Error(`wrk printed no summary:\n${p.stdout}\n${p.stderr}`)
  const r = JSON.parse(line.slice('WRKJSON '.length)) as WrkResult
  r.rps = r.requests / (r.duration_us / 1e6)
  if (r.requests === 0) throw new Error('wrk made no requests')
  return r
}

// ---------------------------------------------------------------- curl ----

export interface CurlResult {
  status: number
  size: number
  /** Seconds until the first body byte (includes connect). */
  ttfb: number
  total: number
}

const CURL_FMT = '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\\n'

function parseCurl(out: string): CurlResult {
  const [status, size, ttfb, total] = out.trim().split(/\s+/).map(Number)
  return { status: status!, size: size!, ttfb: ttfb!, total: total! }
}

/** GET `url` into /dev/null with curl. @throws unless the answer is 200 with `expectSize` bytes (when given). */
export async function curl(url: string, expectSize?: number, timeoutMs = 300_000): Promise<CurlResult> {
  const p = await run('curl', ['-sS', '-o', '/dev/null', '-w', CURL_FMT, url], { timeoutMs })
  const r = parseCurl(p.stdout)
  if (p.code !== 0 || r.status !== 200 || (expectSize !== undefined && r.size !== expectSize)) {
    throw new Error(`curl ${url}: exit ${p.code}, status ${r.status}, ${r.size} bytes (expected ${expectSize}): ${p.stderr}`)
  }
  return r
}

/** Many curls at once; resolves when all are done, with the wall time from start to the last. */
export async function curlMany(url: string, n: number, expectSize: number, timeoutMs = 600_000): Promise<{ results: CurlResult[]; wallMs: number }> {
  const t0 = performance.now()
  const results = await Promise.all(Array.from({ length: n }, () => curl(url, expectSize, timeoutMs)))
  return { results, wallMs: performance.now() - t0 }
}

/** GET a small text (narinfo) with fetch. */
export async function getText(url: string): Promise<{ status: number; text: string; ms: number }> {
  const t0 = performance.now()
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) })
  const text = await res.text()
  return { status: res.status, text, ms: performance.now() - t0 }
}

/** GETs every URL, `concurrency` at a time; throws on a non-200. */
export async function getAll(urls: string[], concurrency = 16): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < urls.length) {
        const u = urls[next++]!
        const r = await getText(u)
        if (r.status !== 200) throw new Error(`GET ${u}: ${r.status}`)
      }
    }),
  )
}

// ----------------------------------------------------------------- RSS ----

async function statusField(pid: number, field: string): Promise<number | undefined> {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(await readFile(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

/** Polls the summed VmRSS of `pids()` every `everyMs` until stopped; keeps the peak. */
export class RssPoller {
  peak = 0
  #stop = false
  readonly #done: Promise<void>

  constructor(pids: () => Promise<number[]> | number[], everyMs = 50, maxMs = 900_000) {
    const deadline = Date.now() + maxMs
    this.#done = (async () => {
      while (!this.#stop && Date.now() < deadline) {
        let sum = 0
        for (const pid of await pids()) sum += (await statusField(pid, 'VmRSS')) ?? 0
        if (sum > this.peak) this.peak = sum
        await sleep(everyMs)
      }
    })()
  }

  async stop(): Promise<number> {
    this.#stop = true
    await this.#done
    return this.peak
  }
}

/** VmHWM (peak resident set since the process started) of `pid`. */
export function vmHWM(pid: number): Promise<number | undefined> {
  return statusField(pid, 'VmHWM')
}

// ----------------------------------------------------------------- CPU ----

let clockTicks: number | undefined

/** Clock ticks per second of /proc/<pid>/stat's times (`getconf CLK_TCK`). */
export async function clkTck(): Promise<number> {
  clockTicks ??= Number((await runOk('getconf', ['CLK_TCK'])).stdout.trim())
  if (!Number.isFinite(clockTicks) || clockTicks <= 0) throw new Error(`getconf CLK_TCK: ${clockTicks}`)
  return clockTicks
}

/** `pid` and all its descendants, from the parent pids in /proc/<pid>/stat. */
export async function processTree(pid: number): Promise<number[]> {
  const { readdir } = await import('node:fs/promises')
  const children = new Map<number, number[]>()
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue
    const stat = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => undefined)
    if (!stat) continue
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    children.set(ppid, [...(children.get(ppid) ?? []), Number(d)])
  }
  const out: number[] = []
  const todo = [pid]
  while (todo.length) {
    const p = todo.pop()!
    out.push(p)
    todo.push(...(children.get(p) ?? []))
  }
  return out
}

/**
 * CPU ticks used so far by `pid` and its descendants, all threads: utime + stime,
 * plus cutime + cstime (children that exited and were waited for), per process.
 */
export async function treeCpuTicks(pid: number): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  for (const p of await processTree(pid)) {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => undefined)
    if (!stat) continue
    // Fields after the command: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    out.set(p, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]))
  }
  return out
}

function ticksSince(before: Map<number, number>, after: Map<number, number>): number {
  let ticks = 0
  for (const [p, t] of after) ticks += t - (before.get(p) ?? 0)
  return ticks
}

/**
 * Measures the CPU seconds a process tree spends during `fn`. Processes alive at
 * both readings count their difference; those started meanwhile count in full;
 * those started and ended meanwhile count through their parent's cutime/cstime.
 * With `settleMs`, work the tree goes on doing after `fn` (fsyncs, index writes
 * after the client's last byte) counts too: the second reading waits until a
 * `settleMs` window adds at most one tick (for at most 5 s).
 */
export async function cpuDuring<T>(
  pid: () => number,
  fn: () => Promise<T>,
  opts: { settleMs?: number } = {},
): Promise<{ value: T; cpuS: number; processes: number; settledMs: number }> {
  const hz = await clkTck()
  const before = await treeCpuTicks(pid())
  const value = await fn()
  const ended = performance.now()
  let after = await treeCpuTicks(pid())
  if (opts.settleMs) {
    for (;;) {
      await sleep(opts.settleMs)
      const next = await treeCpuTicks(pid())
      const added = ticksSince(after, next)
      after = next
      if (added <= 1 || performance.now() - ended > 5000) break
    }
  }
  return { value, cpuS: ticksSince(before, after) / hz, processes: after.size, settledMs: performance.now() - ended }
}

/**
 * Waits until the process tree of `pid` is idle: a `windowMs` window adds at
 * most one tick of CPU (for at most `maxMs`). A warm scenario measures after
 * narthex's background work for the warm-up (NAR prefetch, commits) is over,
 * as it would be long after a cold fetch. Returns the time waited.
 */
export async function settled(pid: number, opts: { windowMs?: number; maxMs?: number } = {}): Promise<number> {
  const { windowMs = 300, maxMs = 30_000 } = opts
  const t0 = performance.now()
  let last = await treeCpuTicks(pid)
  for (;;) {
    await sleep(windowMs)
    const next = await treeCpuTicks(pid)
    const added = ticksSince(last, next)
    last = next
    if (added <= 1 || performance.now() - t0 > maxMs) return performance.now() - t0
  }
}

// ------------------------------------------------------------ start-up ----

/** One GET on a connection of its own (no keep-alive pool): status and the time until the body's end. */
export function getFresh(url: string, timeoutMs = 30_000): Promise<{ status: number; ms: number; body: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const req = httpGet(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
  })
}

/**
 * GETs `url` (each try on a new connection, `everyMs` apart) until it answers 200.
 * @returns when that answer ended, in ms after `t0` (a performance.now() value), and how many tries it took.
 * @throws after `timeoutMs`, or when `alive()` turns false.
 */
export async function pollUntilOk(url: string, t0: number, opts: { everyMs?: number; timeoutMs?: number; alive?: () => boolean } = {}): Promise<{ atMs: number; tries: number }> {
  const { everyMs = 2, timeoutMs = 600_000, alive = () => true } = opts
  for (let tries = 1; ; tries++) {
    const r = await getFresh(url, 10_000).catch(() => undefined)
    if (r?.status === 200) return { atMs: performance.now() - t0, tries }
    if (!alive()) throw new Error(`GET ${url}: the server exited before answering`)
    if (performance.now() - t0 > timeoutMs) throw new Error(`GET ${url}: no 200 within ${timeoutMs} ms (last: ${r?.status ?? 'no connection'})`)
    await sleep(everyMs)
  }
}

/** Waits until a TCP connect to 127.0.0.1:`port` succeeds (polled every `everyMs`); ms after `t0`. */
export async function pollConnect(port: number, t0: number, everyMs = 2, timeoutMs = 60_000): Promise<number> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return performance.now() - t0
    if (performance.now() - t0 > timeoutMs) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}
