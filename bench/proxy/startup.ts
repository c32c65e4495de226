/**
 * Start-up scenarios of the suite (run from run.ts, which owns the samples):
 *
 * - `firstnarinfo`: a proxy just started on a populated store (the 500-path
 *   closure fetched through it before): time from the spawn until it is ready
 *   (narthex: `/healthz` answers 200; nginx: its port accepts connections),
 *   then the latency of the first narinfo request, sent right after, and the
 *   time from the spawn to that first answer.
 * - `startup`: narthex on a data directory of 1,000,000 stored NARs
 *   (big-store.ts): spawn → first answered narinfo and spawn → `/healthz`, polled
 *   side by side, after a clean shutdown (SIGTERM) and after a SIGKILL taken
 *   while it served requests.
 */
import type { ChildProcess } from 'node:child_process'
import { rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { bigStoreDirs, readBigStore, type BigStoreMeta } from './big-store.js'
import { getFresh, getText, pollConnect, pollUntilOk, run, type LoadNote } from './measure.js'
import { freePort, Narthex, Nginx } from './servers.js'
import type { Sample, Scenario } from './run.js'

/** What the start-up scenarios take from the suite. */
export interface SuiteContext {
  readonly bin: string
  readonly benchDir: string
  readonly runDir: string
  readonly keyFile: string
  readonly upstreamUrl: string
  readonly upstreamPublicKey: string
  readonly closureHashParts: readonly string[]
  readonly nginxTemplate: string
  readonly nodeArgs: string[]
  readonly workers: number | 'auto'
  readonly quick: boolean
  readonly runs: number
  /** Stored NARs of the startup scenario's data directory. */
  readonly bigStoreCount: number
  record(s: Omit<Sample, 'run'>, run: number): void
  measured<T>(fn: () => Promise<T>): Promise<{ value: T; load: LoadNote }>
  repeat(scenario: Scenario, body: (r: number) => Promise<void>, metrics?: string[], runs?: number): Promise<void>
  order<T>(run: number, xs: T[]): T[]
  say(msg: string): void
  note(msg: string): void
  /** Reports an exit of `child` the suite did not ask for. */
  watch(what: string, child: ChildProcess): void
  /** Marks `child` as stopped on purpose. */
  expectExit(child: ChildProcess): void
  /** Upstream requests whose log line contains `urlPart` since `mark` (see accessLogMark). */
  upstreamRequestsSince(mark: number, urlPart: string): Promise<number>
  accessLogMark(): Promise<number>
}

type FirstTarget = 'narthex' | 'narthex-w' | 'nginx'

// narthex's log lines at an unclean start and at the end of its background repair.
const UNCLEAN = 'the last stop was not clean'
const CHECKED = 'store checked after an unclean stop'

/** GETs every narinfo of `hashParts` through `base` and the NAR it names, `concurrency` at a time. */
async function fetchClosure(base: string, hashParts: readonly string[], concurrency = 16): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < hashParts.length) {
        const hp = hashParts[next++]!
        const info = await getText(`${base}/${hp}.narinfo`)
        if (info.status !== 200) throw new Error(`${base}/${hp}.narinfo: ${info.status}`)
        const url = /^URL: (.*)$/m.exec(info.text)![1]!
        const nar = await fetch(`${base}/${url}`, { signal: AbortSignal.timeout(60_000) })
        await nar.arrayBuffer()
        if (nar.status !== 200) throw new Error(`${base}/${url}: ${nar.status}`)
      }
    }),
  )
}

const answers = (body: string, hp: string) => body.includes(`StorePath: /nix/store/${hp}-`)

export async function scenarioFirstNarinfo(ctx: SuiteContext): Promise<void> {
  const targets: FirstTarget[] = ['narthex', ...(ctx.workers !== 0 ? (['narthex-w'] as const) : []), 'nginx']
  const dirOf = (t: FirstTarget) => join(ctx.runDir, `first-${t}`)
  const narthexOpts = (t: FirstTarget) => ({
    bin: ctx.bin,
    dir: dirOf(t),
    signingKeyFile: ctx.keyFile,
    upstreamUrl: ctx.upstreamUrl,
    upstreamPublicKey: ctx.upstreamPublicKey,
    nodeArgs: ctx.nodeArgs,
    ...(t === 'narthex-w' ? { workers: ctx.workers } : {}),
  })
  const nginxOpts = (port?: number) => ({
    template: ctx.nginxTemplate,
    prefix: dirOf('nginx'),
    vars: { CACHE: join(dirOf('nginx'), 'cache'), UPSTREAM_PORT: new URL(ctx.upstreamUrl).port },
    ...(port ? { port } : {}),
  })
  ctx.say(`7. first narinfo from a just-started proxy on a populated store (${targets.join(', ')})`)
  // Populate each store: the whole closure, narinfos and NARs, twice (the second time from the store).
  for (const t of targets) {
    if (t === 'nginx') {
      await rm(dirOf(t), { recursive: true, force: true })
      const x = await Nginx.start(nginxOpts())
      await fetchClosure(x.url, ctx.closureHashParts)
      await fetchClosure(x.url, ctx.closureHashParts)
      ctx.expectExit(x.child)
      await x.stop()
    } else {
      const n = await Narthex.start(narthexOpts(t))
      await fetchClosure(n.url, ctx.closureHashParts)
      await fetchClosure(n.url, ctx.closureHashParts)
      ctx.expectExit(n.child)
      await n.stop()
    }
  }
  const starts = ctx.quick ? 3 : 3 * ctx.runs
  let k = 0
  await ctx.repeat(
    'firstnarinfo',
    async (r) => {
      for (const target of ctx.order(r, targets)) {
        const hp = ctx.closureHashParts[(k++ * 97) % ctx.closureHashParts.length]!
        const port = await freePort()
        const { value, load } = await ctx.measured(async () => {
          let child: ChildProcess
          let spawnedAt: number
          let readyMs: number
          let stop: () => Promise<void>
          if (target === 'nginx') {
            const s = await Nginx.spawn(nginxOpts(port) as Parameters<typeof Nginx.spawn>[0])
            child = s.nginx.child
            spawnedAt = s.spawnedAt
            stop = () => s.nginx.stop()
            ctx.watch('nginx (first narinfo)', child)
            readyMs = await pollConnect(port, spawnedAt, 1)
          } else {
            const s = await Narthex.spawn({ ...narthexOpts(target), keepData: true, port })
            child = s.narthex.child
            spawnedAt = s.spawnedAt
            stop = () => s.narthex.stop()
            ctx.watch(`${target} (first narinfo)`, child)
            readyMs = (await pollUntilOk(`http://127.0.0.1:${port}/healthz`, spawnedAt, { everyMs: 1, timeoutMs: 60_000, alive: () => child.exitCode === null })).atMs
          }
          const mark = await ctx.accessLogMark()
          const first = await getFresh(`http://127.0.0.1:${port}/${hp}.narinfo`)
          const startToFirst = performance.now() - spawnedAt
          const upstreamAsked = await ctx.upstreamRequestsSince(mark, `/${hp}.narinfo`)
          ctx.expectExit(child)
          await stop()
          if (first.status !== 200 || !answers(first.body, hp)) throw new Error(`${target}: first narinfo ${hp}: ${first.status} ${first.body.slice(0, 200)}`)
          return { readyMs, firstMs: first.ms, startToFirst, upstreamAsked }
        })
        if (value.upstreamAsked > 0) ctx.note(`firstnarinfo ${target}: the first narinfo went to the upstream (${value.upstreamAsked} request(s)): not answered from the store`)
        ctx.record({ scenario: 'firstnarinfo', metric: 'first', target, value: value.firstMs, unit: 'ms', load }, r)
        ctx.record({ scenario: 'firstnarinfo', metric: 'ready', target, value: value.readyMs, unit: 'ms', load }, r)
        ctx.record({ scenario: 'firstnarinfo', metric: 'startToFirst', target, value: value.startToFirst, unit: 'ms', load }, r)
        ctx.say(
          `   start ${r} ${target}: ready after ${value.readyMs.toFixed(0)} ms, first narinfo ${value.firstMs.toFixed(2)} ms, ` +
            `spawn to first answer ${value.startToFirst.toFixed(0)} ms${value.upstreamAsked ? ' (FROM THE UPSTREAM)' : ''}`,
        )
      }
    },
    ['first'],
    starts,
  )
}

/** The 1M-NAR store, made by big-store.ts in a process of its own when missing. */
async function bigStore(ctx: SuiteContext): Promise<BigStoreMeta> {
  const have = await readBigStore(ctx.benchDir, ctx.bigStoreCount)
  if (have) return have
  ctx.say(`startup: making a data directory of ${ctx.bigStoreCount} stored NARs (bench/proxy/big-store.ts; a few minutes, kept in bench/.data)`)
  const script = join(ctx.benchDir, 'proxy', 'big-store.ts')
  const p = await run(process.execPath, ['--import', 'tsx', script, '--count', String(ctx.bigStoreCount)], { cwd: ctx.benchDir, timeoutMs: 3_600_000 })
  const made = p.code === 0 ? await readBigStore(ctx.benchDir, ctx.bigStoreCount) : undefined
  if (!made) throw new Error(`big-store.ts exited with ${p.code}: ${p.stderr.slice(-2000)}`)
  ctx.say(`   made in ${made.seconds.toFixed(0)} s`)
  return made
}

/** Narinfo and NAR requests from `clients` loops until `stop` resolves; answers are not checked (the server is about to die). */
async function keepBusy(base: string, hashParts: readonly string[], stop: Promise<void>, clients = 8): Promise<number> {
  let done = 0
  let stopped = false
  void stop.then(() => (stopped = true))
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = c; !stopped; i += clients) {
        try {
          const info = await getText(`${base}/${hashParts[i % hashParts.length]}.narinfo`)
          const url = /^URL: (.*)$/m.exec(info.text)?.[1]
          if (url) await (await fetch(`${base}/${url}`, { signal: AbortSignal.timeout(10_000) })).arrayBuffer()
          done++
        } catch {
          if (!stopped) await sleep(5)
        }
      }
    }),
  )
  return done
}

export async function scenarioStartup(ctx: SuiteContext): Promise<void> {
  const meta = await bigStore(ctx)
  const dirs = bigStoreDirs(ctx.benchDir, ctx.bigStoreCount)
  ctx.say(`8. start-up on ${meta.count} stored NARs (${(meta.bytes / 2 ** 20).toFixed(0)} MiB): after a clean shutdown and after SIGKILL`)
  let k = 0
  const start = async (): Promise<{ narthex: Narthex; narinfoMs: number; healthMs: number; unclean: boolean }> => {
    const port = await freePort()
    const hp = meta.sampleHashParts[(k++ * 131) % meta.sampleHashParts.length]!
    const { narthex, spawnedAt } = await Narthex.spawn({
      bin: ctx.bin,
      dir: join(ctx.runDir, 'narthex-big'),
      dataDir: dirs.dataDir,
      signingKeyFile: ctx.keyFile,
      upstreamUrl: ctx.upstreamUrl,
      upstreamPublicKey: ctx.upstreamPublicKey,
      nodeArgs: ctx.nodeArgs,
      port,
    })
    ctx.watch('narthex (1M NARs)', narthex.child)
    const alive = () => narthex.child.exitCode === null && narthex.child.signalCode === null
    const poll = { everyMs: 5, timeoutMs: 900_000, alive }
    const [info, health] = await Promise.all([pollUntilOk(`${narthex.url}/${hp}.narinfo`, spawnedAt, poll), pollUntilOk(`${narthex.url}/healthz`, spawnedAt, poll)])
    await narthex.waitServing(120_000)
    const check = await getFresh(`${narthex.url}/${hp}.narinfo`)
    if (!answers(check.body, hp)) throw new Error(`narthex on the big store: ${hp}.narinfo: ${check.status} ${check.body.slice(0, 200)}`)
    return { narthex, narinfoMs: info.atMs, healthMs: health.atMs, unclean: (await narthex.logged(UNCLEAN)).length > 0 }
  }
  // A clean shutdown leaves the clean marker only once the background repair of an
  // unclean start has finished (an interrupted one starts over): wait for it, so the
  // next start follows a clean shutdown, and report how long the repair took.
  const repaired = async (n: Narthex): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 1_800_000
    for (;;) {
      const done = await n.logged(CHECKED)
      if (done[0]) return done[0]
      if (n.child.exitCode !== null || n.child.signalCode !== null) throw new Error('narthex (1M NARs) exited during the background repair')
      if (Date.now() > deadline) throw new Error('narthex (1M NARs): the background repair did not finish within 30 min')
      await sleep(500)
    }
  }
  const stop = async (n: Narthex) => {
    ctx.expectExit(n.child)
    await n.stop()
    if (n.child.signalCode === 'SIGKILL') throw new Error('narthex did not stop within 20 s of SIGTERM: the next start does not follow a clean shutdown')
  }
  // A first start and clean stop by this build, so the first measured start follows one.
  ctx.say('   a first start (not measured), then SIGTERM')
  const t0 = performance.now()
  const primed = await start()
  ctx.say(`   first start: narinfo after ${(primed.narinfoMs / 1000).toFixed(2)} s, /healthz after ${(primed.healthMs / 1000).toFixed(2)} s (${((performance.now() - t0) / 1000).toFixed(1)} s in all)`)
  if (primed.unclean) {
    const done = await repaired(primed.narthex)
    ctx.say(`   it followed an unclean stop: repaired in the background in ${(Number(done.durationMs) / 1000).toFixed(1)} s`)
  }
  await stop(primed.narthex)
  const runs = ctx.quick ? 1 : ctx.runs
  await ctx.repeat(
    'startup',
    async (r) => {
      const clean = await ctx.measured(start)
      const c = clean.value
      ctx.record({ scenario: 'startup', metric: 'cleanNarinfo', target: 'narthex', value: c.narinfoMs / 1000, unit: 's', load: clean.load }, r)
      ctx.record({ scenario: 'startup', metric: 'cleanHealthz', target: 'narthex', value: c.healthMs / 1000, unit: 's', load: clean.load }, r)
      ctx.say(`   run ${r} after a clean shutdown: first narinfo ${(c.narinfoMs / 1000).toFixed(3)} s, /healthz ${(c.healthMs / 1000).toFixed(3)} s from the spawn`)
      // SIGKILL while it serves: 8 clients asking for narinfos and NARs, killed after a second of that.
      let release!: () => void
      const killed = new Promise<void>((resolve) => (release = resolve))
      const busy = keepBusy(c.narthex.url, meta.sampleHashParts, killed)
      await sleep(1000)
      ctx.expectExit(c.narthex.child)
      await c.narthex.kill()
      release()
      const served = await busy
      const crash = await ctx.measured(start)
      const x = crash.value
      ctx.record({ scenario: 'startup', metric: 'killNarinfo', target: 'narthex', value: x.narinfoMs / 1000, unit: 's', load: crash.load }, r)
      ctx.record({ scenario: 'startup', metric: 'killHealthz', target: 'narthex', value: x.healthMs / 1000, unit: 's', load: crash.load }, r)
      ctx.say(`   run ${r} after SIGKILL (${served} requests answered in the second before): first narinfo ${(x.narinfoMs / 1000).toFixed(3)} s, /healthz ${(x.healthMs / 1000).toFixed(3)} s`)
      if (c.unclean) throw new Error(`startup run ${r}: the start after a clean shutdown found no clean marker`)
      if (!x.unclean) throw new Error(`startup run ${r}: the start after SIGKILL found a clean marker`)
      const done = await repaired(x.narthex)
      const repairS = Number(done.durationMs) / 1000
      ctx.record({ scenario: 'startup', metric: 'killRepair', target: 'narthex', value: repairS, unit: 's', load: crash.load }, r)
      ctx.say(`   run ${r}: the background repair after SIGKILL took ${repairS.toFixed(1)} s`)
      const changed = Number(done.orphanFilesRemoved) + Number(done.danglingEntriesRemoved)
      if (changed > 0) {
        ctx.note(`startup run ${r}: the repair after SIGKILL changed the big store (${JSON.stringify(done)}); it is made anew next time`)
        await unlink(dirs.meta).catch(() => undefined)
      }
      await stop(x.narthex)
    },
    ['cleanNarinfo', 'killNarinfo'],
    runs,
  )
}
