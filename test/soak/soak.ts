/**
 * Soak test (not part of `npm test`): the real narthex, in front of two upstream caches made by real
 * nix, under a mixed client load for several minutes while the first upstream injects random faults
 * (and now and then the second too). Every byte a client receives is verified: each NAR file of the
 * upstream cache was decompressed by the system's own xz/zstd and found to have its signed NarHash
 * at start, and every complete NAR response must hash to exactly that file. narthex's RSS and open
 * file descriptors (/proc/<pid>/status, /proc/<pid>/fd) are sampled throughout and must stay flat.
 *
 *   npm run build && node --import tsx test/soak/soak.ts [--duration 180] [--clients 16]
 *       [--fault-rate 0.15] [--paths 1200] [--seed N] [--json FILE]
 *
 * Exits 0 when every check held, 1 otherwise; prints a summary either way. See docs/RELIABILITY.md.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { encodeNix32, narFileNameOf, parseNarInfo, parsePublicKey, validSigners, type NarInfo } from '../../src/protocol/index.js'
import { getOnce, seededRandom } from '../helpers/http.js'
import { hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixAvailable } from '../helpers/nix.js'
import { startStaticServer, type Fault } from '../helpers/static-server.js'
import { checkStore, hashNarFile } from '../helpers/store-check.js'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '180' },
    clients: { type: 'string', default: '16' },
    'fault-rate': { type: 'string', default: '0.15' },
    paths: { type: 'string', default: '1200' },
    seed: { type: 'string' },
    json: { type: 'string' },
  },
})
const DURATION_S = Number(args.duration)
const CLIENTS = Number(args.clients)
const FAULT_RATE = Number(args['fault-rate'])
const SMALL_PATHS = Number(args.paths)
const SEED = Number(args.seed ?? Math.floor(Math.random() * 2 ** 31))
const SAMPLE_MS = 2000

const random = seededRandom(SEED)
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]
const log = (msg: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)


interface Path {
  storePath: string
  hashPart: string
  info: NarInfo
  name: string
  fileSha: string
  fileSize: number
  narinfoSize: number
}

interface Sample {
  t: number
  rssKiB: number
  fds: number
  threads: number
  /** V8 heap in use (from /metrics), MiB; NaN when not read. */
  heapMiB: number
}

function sample(pid: number, t0: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN)
  return { t: (Date.now() - t0) / 1000, rssKiB: field('VmRSS'), fds: readdirSync(`/proc/${pid}/fd`).length, threads: field('Threads'), heapMiB: NaN }
}

async function heapUsedMiB(url: string): Promise<number> {
  const metrics = (await getOnce(`${url}/metrics`, 60_000)).body.toString()
  return Number(/^narthex_nodejs_heap_size_used_bytes (\S+)/m.exec(metrics)?.[1] ?? NaN) / 2 ** 20
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]
}

async function main(): Promise<number> {
  if (!nixAvailable) {
    log('the real nix client is needed: apt-get install -y nix-bin')
    return 1
  }
  log(`seed ${SEED}; ${DURATION_S} s, ${CLIENTS} clients, fault rate ${FAULT_RATE}, ${SMALL_PATHS} small paths`)
  const nix = await NixEnv.create()
  try {
    // --- Real paths and caches ------------------------------------------------------------------
    const spec: Record<string, { deps?: string[]; bigBytes?: number }> = {}
    for (let i = 0; i < SMALL_PATHS; i++) spec[`s${i}`] = i % 5 === 0 ? {} : { deps: [`s${i - 1}`] }
    for (let i = 0; i < 60; i++) spec[`m${i}`] = { bigBytes: 256 * 1024 + i * 12 * 1024 }
    for (let i = 0; i < 8; i++) spec[`l${i}`] = { bigBytes: 4 * 1024 * 1024 }
    const built = await nix.buildClosure(spec)
    const key = await nix.genKey('soak-1')
    await nix.sign(key.secretFile, Object.values(built))
    const cacheDir = nix.freshDir('cache')
    const named = (p: string) => Object.entries(built).filter(([n]) => n.startsWith(p)).map(([, v]) => v)
    await nix.copyToCache(cacheDir, named('s'))
    await nix.copyToCache(cacheDir, named('m'), { compression: 'zstd' })
    await nix.copyToCache(cacheDir, named('l'), { compression: 'none' })
    log(`built and cached ${Object.keys(built).length} paths; checking every NAR file against its NarHash`)
    const paths: Path[] = []
    for (const storePath of Object.values(built)) {
      const info = await readCacheNarInfo(cacheDir, storePath)
      const file = join(cacheDir, info.url)
      const h = await hashNarFile(file)
      if (h.narHash !== `sha256:${encodeNix32(info.narHash.digest)}` || h.narSize !== info.narSize) throw new Error(`${file} does not decompress to its NarHash`)
      paths.push({
        storePath,
        hashPart: hashPartOf(storePath),
        info,
        name: narFileNameOf(info),
        fileSha: createHash('sha256').update(readFileSync(file)).digest('hex'),
        fileSize: h.fileSize,
        narinfoSize: readFileSync(join(cacheDir, `${hashPartOf(storePath)}.narinfo`)).length,
      })
    }
    const byUrl = new Map<string, number>(paths.flatMap((p): Array<[string, number]> => [[`/${p.info.url}`, p.fileSize], [`/${p.hashPart}.narinfo`, p.narinfoSize]]))
    // Hash parts no upstream has: narinfo misses that end in 404 (or 503 under faults).
    const absent = Array.from({ length: 300 }, () => encodeNix32(Buffer.from(Array.from({ length: 20 }, () => Math.floor(random() * 256)))))

    // --- Upstreams with faults -------------------------------------------------------------------
    const faultCounts = new Map<string, number>()
    // When the first upstream last said a NAR was gone (404), by its URL there.
    const goneAt = new Map<string, number>()
    const randomFault = (url: string, onB: boolean): Fault => {
      const size = byUrl.get(url) ?? 0
      const nar = url.startsWith('/nar/')
      const catalog: Array<[string, () => Fault]> = [
        ['delay-short', () => ({ kind: 'delayHeaders', ms: 300 })],
        ['delay-long', () => ({ kind: 'delayHeaders', ms: 1500 })],
        ['hang', () => ({ kind: 'hang' })],
        ['500', () => ({ kind: 'status', status: 500 })],
        ['503', () => ({ kind: 'status', status: 503, headers: { 'Retry-After': '1' } })],
        ['429', () => ({ kind: 'status', status: 429 })],
        ['trickle-1Bps', () => ({ kind: 'trickle', bytesPerSecond: 1 })],
        ['wrong-length', () => ({ kind: 'wrongLength', delta: random() < 0.5 ? -5 : 5 })],
      ]
      if (size > 1) {
        catalog.push(
          ['reset', () => ({ kind: 'reset', afterBytes: Math.floor(random() * size) })],
          ['truncate', () => ({ kind: 'truncate', bytes: Math.floor(random() * size) })],
          ['flip', () => ({ kind: 'flip', offset: Math.floor(random() * size) })],
        )
      }
      if (nar) catalog.push(['trickle-2KBps', () => ({ kind: 'trickle', bytesPerSecond: 2048 })])
      if (nar && !onB) catalog.push(['404', () => ({ kind: 'status', status: 404 })])
      if (!nar) catalog.push(['garbage', () => ({ kind: 'body', body: 'StorePath: /nix/store/garbage\n\0\0\n' })])
      const [label, make] = pick(catalog)
      faultCounts.set(label, (faultCounts.get(label) ?? 0) + 1)
      if (label === '404') goneAt.set(url, Date.now())
      return make()
    }
    const a = await startStaticServer(cacheDir)
    const b = await startStaticServer(cacheDir)
    let faulting = true
    // Whether b is faulted too is decided with a's fault, per request URL, so both fail together.
    const alsoB = new Set<string>()
    a.fault = (req) => {
      if (!faulting || random() >= FAULT_RATE) return undefined
      if (random() < 0.2) alsoB.add(req.url ?? '')
      return randomFault(req.url ?? '', false)
    }
    b.fault = (req) => {
      const url = req.url ?? ''
      if (!faulting || !alsoB.delete(url)) return undefined
      return randomFault(url, true)
    }
    const upstream = (name: string, url: string) => ({
      name,
      url,
      publicKeys: [key.publicKey],
      timeoutMs: 1000,
      retries: 0,
      minBytesPerSecond: 4096,
      speedWindowMs: 2000,
      failureThreshold: 5,
      downForMs: 2000,
    })
    const narthex = await NarthexProcess.start({
      upstreams: [upstream('a', a.url), upstream('b', b.url)],
      rules: [{ match: '*', upstreams: ['a', 'b'], minSignatures: 1 }],
      cache: { negativeTtlMs: 2000, unavailableTtlMs: 1000 },
      prefetch: { references: true, nars: false, maxInFlight: 8 },
      log: { level: 'info' },
    })
    const pid = narthex.child!.pid!
    const publicKey = parsePublicKey(narthex.publicKey)
    log(`narthex pid ${pid} at ${narthex.url}`)
    let died: string | undefined
    let stopping = false
    narthex.child!.once('exit', (code, signal) => {
      if (stopping) return
      died = `narthex exited (${code ?? signal}) during the soak`
      log(`${died}; its last log lines:\n${narthex.logs.slice(-30).map((l) => JSON.stringify(l)).join('\n')}`)
    })

    // --- Load ------------------------------------------------------------------------------------
    const stats = {
      requests: 0,
      narinfo: new Map<number, number>(),
      nar: new Map<number, number>(),
      narsVerified: 0,
      bytesVerified: 0,
      cut: 0,
      failures: [] as string[],
      failuresTotal: 0,
    }
    const bump = (m: Map<number, number>, k: number) => m.set(k, (m.get(k) ?? 0) + 1)
    const fail = (msg: string) => {
      stats.failuresTotal++
      if (stats.failures.length < 50) stats.failures.push(msg)
    }
    const refused404 = new Set<string>()
    let narGone = 0
    const cold = [...paths].sort(() => random() - 0.5)
    const warm: Path[] = []
    const t0 = Date.now()
    const end = t0 + DURATION_S * 1000
    // Cold paths are released at a steady rate, so misses continue until the end.
    const coldPerSecond = cold.length / (DURATION_S * 0.9)
    let coldTaken = 0

    const samples: Sample[] = []
    const sampler = setInterval(() => {
      if (died) return
      const s = sample(pid, t0)
      samples.push(s)
      heapUsedMiB(narthex.url).then(
        (mib) => (s.heapMiB = mib),
        () => undefined,
      )
    }, SAMPLE_MS)
    samples.push(sample(pid, t0))

    const client = async () => {
      while (Date.now() < end && !died) {
        const r = random()
        const due = Math.floor(((Date.now() - t0) / 1000) * coldPerSecond)
        let target: Path | string
        if (coldTaken < Math.min(due, cold.length) && r < 0.5) target = cold[coldTaken++]!
        else if (warm.length > 0 && r < 0.9) target = pick(warm)
        else target = pick(absent)
        const hashPart = typeof target === 'string' ? target : target.hashPart
        try {
          stats.requests++
          const ni = await getOnce(`${narthex.url}/${hashPart}.narinfo`, 60_000)
          bump(stats.narinfo, ni.status)
          if (typeof target === 'string') {
            if (ni.status !== 404 && ni.status !== 503) fail(`absent ${hashPart}.narinfo: ${ni.status}`)
            continue
          }
          if (ni.status === 503) continue
          if (ni.status === 404) {
            // Right only if policy refused it (checked against narthex's log at the end).
            refused404.add(target.storePath)
            continue
          }
          if (ni.status !== 200 || !ni.complete) {
            fail(`${hashPart}.narinfo: ${ni.status}${ni.complete ? '' : ' (cut off)'}`)
            continue
          }
          const info = parseNarInfo(ni.body.toString('utf8'))
          if (info.url !== `nar/${hashPart}/${target.name}` || !info.narHash.digest.equals(target.info.narHash.digest) || validSigners(info, [publicKey]).length !== 1) {
            fail(`${hashPart}.narinfo: not the admitted narinfo signed by narthex`)
            continue
          }
          stats.requests++
          // A download that fails before any byte of this response went out closes the connection
          // without a response (the last byte is held back, so not even the headers were flushed).
          const nar = await getOnce(`${narthex.url}/${info.url}`, 60_000).catch((err: Error) => {
            if (err.message !== 'socket hang up') throw err
            return { status: 200, body: Buffer.alloc(0), complete: false }
          })
          bump(stats.nar, nar.status)
          if (nar.status === 503) continue
          // "Gone" is right only just after the first upstream said so (for a path admitted from
          // it alone, while the second could not be asked); the skip after a 404 lasts 5 s.
          const gone = goneAt.get(`/${target.info.url}`)
          if (nar.status === 404 && gone !== undefined && Date.now() - gone < 10_000) narGone++
          else if (nar.status !== 200) fail(`${info.url}: ${nar.status}`)
          else if (!nar.complete) stats.cut++
          else if (createHash('sha256').update(nar.body).digest('hex') !== target.fileSha) fail(`${info.url}: a complete 200 with wrong bytes`)
          else {
            stats.narsVerified++
            stats.bytesVerified += nar.body.length
            if (!warm.includes(target)) warm.push(target)
          }
        } catch (err) {
          fail(`${hashPart}: ${(err as Error).message}`)
        }
        await new Promise((r) => setTimeout(r, 20 + random() * 40))
      }
    }
    const progress = setInterval(() => {
      const s = samples.at(-1)!
      log(`${Math.round((Date.now() - t0) / 1000)} s: ${stats.requests} requests, ${stats.narsVerified} NARs verified, ${warm.length}/${paths.length} paths warm, RSS ${(s.rssKiB / 1024).toFixed(1)} MiB, ${s.fds} fds, ${stats.failuresTotal} failures`)
    }, 30_000)
    await Promise.all(Array.from({ length: CLIENTS }, client))
    clearInterval(progress)
    if (died) throw new Error(died)

    // --- Quiet down: faults off, wait for running downloads to end, then an idle sample ------------
    faulting = false
    const quietDeadline = Date.now() + 30_000
    while (Date.now() < quietDeadline) {
      const metrics = await getOnce(`${narthex.url}/metrics`, 60_000)
      const inFlight = Number(/^narthex_nar_downloads_in_flight(?:\{[^}]*\})? (\d+)/m.exec(metrics.body.toString())?.[1] ?? 0)
      if (inFlight === 0) break
      await new Promise((r) => setTimeout(r, 250))
    }
    // Idle keep-alive sockets to the upstreams close after the servers' 5 s keep-alive timeout;
    // what is still open after that, beyond the start's count, is what leaks.
    clearInterval(sampler)
    const first = samples[0]
    first.heapMiB = Number.isNaN(first.heapMiB) ? samples[1]?.heapMiB ?? NaN : first.heapMiB
    let idle = sample(pid, t0)
    for (const idleDeadline = Date.now() + 30_000; idle.fds > first.fds + 8 && Date.now() < idleDeadline; idle = sample(pid, t0)) {
      await new Promise((r) => setTimeout(r, 500))
    }
    idle.heapMiB = await heapUsedMiB(narthex.url)
    samples.push(idle)

    // Every path, fetched once more with no faults, is right. A source that just failed is skipped
    // for 5 s (transient) or 10 min (bad bytes): a 503 is right only while that lasts.
    let heldOut = 0
    const badBytesFrom = (storePath: string) =>
      new Set(narthex.logged('NAR failed verification').filter((l) => l.path === storePath).map((l) => l.upstream as string))
    for (const p of paths) {
      let ni = await getOnce(`${narthex.url}/${p.hashPart}.narinfo`, 60_000)
      let nar = ni.status === 200 ? await getOnce(`${narthex.url}/${parseNarInfo(ni.body.toString('utf8')).url}`, 60_000) : undefined
      for (const retryUntil = Date.now() + 10_000; (ni.status === 503 || nar?.status === 503 || nar?.status === 404) && Date.now() < retryUntil; ) {
        await new Promise((r) => setTimeout(r, 500))
        ni = await getOnce(`${narthex.url}/${p.hashPart}.narinfo`, 60_000)
        nar = ni.status === 200 ? await getOnce(`${narthex.url}/${parseNarInfo(ni.body.toString('utf8')).url}`, 60_000) : undefined
      }
      if (nar?.status === 503 && badBytesFrom(p.storePath).size === 2) heldOut++
      else if (!nar || nar.status !== 200 || !nar.complete || createHash('sha256').update(nar.body).digest('hex') !== p.fileSha) fail(`final fetch of ${p.storePath}: ${ni.status}/${nar?.status}`)
      else {
        stats.narsVerified++
        stats.bytesVerified += nar.body.length
      }
    }
    stopping = true
    const exit = await narthex.stop('SIGTERM')
    if (exit !== 0) fail(`narthex exited with ${exit} on SIGTERM`)
    const store = await checkStore(narthex.dataDir)
    for (const [k, v] of Object.entries({ corrupt: store.corrupt, dangling: store.dangling, orphans: store.orphans, tempFiles: store.tempFiles, badNarinfos: store.badNarinfos })) {
      if (v.length > 0) fail(`store: ${v.length} ${k}`)
    }
    // A 404 for a path the upstreams have is right only when policy refused it: a narinfo damaged in
    // transit at the first upstream, whose signature no longer verifies, conflicts with the second's.
    const refusals = new Map(narthex.logged('refused:').map((l) => [l.path as string, l.reason as string]))
    const refusalReasons = new Map<string, number>()
    for (const storePath of refused404) {
      const reason = refusals.get(storePath)
      if (reason === undefined) fail(`${storePath}: 404 without a refusal`)
      else refusalReasons.set(reason, (refusalReasons.get(reason) ?? 0) + 1)
    }
    const unexpected = narthex.logged('unexpected error').length
    if (unexpected > 0) fail(`narthex logged ${unexpected} unexpected errors`)
    await narthex.cleanup()
    await a.close()
    await b.close()

    // --- Flatness ----------------------------------------------------------------------------------
    // After the first quarter (start-up, JIT, caches filling), RSS and fds must not trend upwards.
    const load = samples.filter((s) => s.t <= DURATION_S)
    const q = Math.floor(load.length / 4)
    const rssQ2 = median(load.slice(q, 2 * q).map((s) => s.rssKiB)) / 1024
    const rssQ4 = median(load.slice(3 * q).map((s) => s.rssKiB)) / 1024
    const fdsQ2 = median(load.slice(q, 2 * q).map((s) => s.fds))
    const fdsQ4 = median(load.slice(3 * q).map((s) => s.fds))
    const heapQ2 = median(load.slice(q, 2 * q).map((s) => s.heapMiB).filter((x) => !Number.isNaN(x)))
    const heapQ4 = median(load.slice(3 * q).map((s) => s.heapMiB).filter((x) => !Number.isNaN(x)))
    const rssFlat = rssQ4 <= rssQ2 * 1.25 + 16
    const fdsFlat = idle.fds <= first.fds + 8
    if (!rssFlat) fail(`RSS grew from a median ${rssQ2.toFixed(1)} MiB (2nd quarter) to ${rssQ4.toFixed(1)} MiB (last quarter)`)
    if (!fdsFlat) fail(`open fds: ${first.fds} at start, ${idle.fds} when idle at the end`)

    const summary = {
      seed: SEED,
      durationS: DURATION_S,
      clients: CLIENTS,
      faultRate: FAULT_RATE,
      paths: paths.length,
      requests: stats.requests,
      narinfoStatuses: Object.fromEntries(stats.narinfo),
      narStatuses: Object.fromEntries(stats.nar),
      narsVerified: stats.narsVerified,
      mibVerified: +(stats.bytesVerified / 2 ** 20).toFixed(1),
      responsesCut: stats.cut,
      faultsInjected: Object.fromEntries([...faultCounts].sort()),
      rssMiB: {
        start: +(first.rssKiB / 1024).toFixed(1),
        min: +(Math.min(...samples.map((s) => s.rssKiB)) / 1024).toFixed(1),
        max: +(Math.max(...samples.map((s) => s.rssKiB)) / 1024).toFixed(1),
        medianQ2: +rssQ2.toFixed(1),
        medianQ4: +rssQ4.toFixed(1),
        idleEnd: +(idle.rssKiB / 1024).toFixed(1),
      },
      heapUsedMiB: { medianQ2: +heapQ2.toFixed(1), medianQ4: +heapQ4.toFixed(1), max: +Math.max(...samples.map((s) => s.heapMiB).filter((x) => !Number.isNaN(x))).toFixed(1), idleEnd: +idle.heapMiB.toFixed(1) },
      fds: { start: first.fds, max: Math.max(...samples.map((s) => s.fds)), medianQ2: fdsQ2, medianQ4: fdsQ4, idleEnd: idle.fds },
      narsHeldOutAfterBadBytesAtBothSources: heldOut,
      nar404JustAfterTheOnlySourceSaidGone: narGone,
      pathsRefusedAfterADamagedNarinfo: Object.fromEntries(refusalReasons),
      samples: samples.length,
      store: { narRecords: store.narRecords, narinfos: store.narinfos, rehashedClean: store.corrupt.length === 0 },
      failuresTotal: stats.failuresTotal,
      failures: stats.failures,
      ok: stats.failuresTotal === 0,
    }
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
    if (args.json) writeFileSync(args.json, `${JSON.stringify({ ...summary, samplesDetail: samples }, null, 2)}\n`)
    log(summary.ok ? 'soak passed' : `soak FAILED: ${stats.failuresTotal} failures`)
    return summary.ok ? 0 : 1
  } finally {
    await nix.cleanup()
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`soak crashed: ${(err as Error).stack ?? err}`)
    process.exit(1)
  },
)
