/**
 * CPU profiles of narthex, one workload at a time: a fresh narthex under
 * `node --cpu-prof` in front of the upstream, the workload, a graceful stop
 * (the profile is written at exit), and a summary (cpuprofile-top.mjs).
 * Unlike `run.ts --cpu-prof`, the profile holds nothing but the workload.
 *
 *   node --import tsx bench/proxy/profile.ts [narinfo|warmnar|coldnar|herd|closure|xz ...]
 *
 * Profiles go to bench/.data/profiles/only-<workload>/. Uses the data and the
 * narthex build that run.ts made (run it once first).
 */
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildNarthex } from './build.js'
import { curl, curlMany, getAll, getText, runOk, wrk } from './measure.js'
import { dataDirs, readManifest } from './prepare.js'
import { Narthex, startUpstream } from './servers.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const BENCH = dirname(HERE)
const ROOT = dirname(BENCH)
const DIRS = dataDirs(BENCH)
const RUN_DIR = join(DIRS.root, 'run-profile')
const say = (m: string) => process.stderr.write(`[profile] ${m}\n`)

const WORKLOADS = ['narinfo', 'warmnar', 'coldnar', 'herd', 'closure', 'xz'] as const
type Workload = (typeof WORKLOADS)[number]
const asked = process.argv.slice(2).filter((a) => a !== '--worktree') as Workload[]
for (const w of asked) if (!WORKLOADS.includes(w)) throw new Error(`unknown workload ${w}; one of ${WORKLOADS.join(', ')}`)

const manifest = await readManifest(DIRS)
const build = await buildNarthex(ROOT, DIRS.root, { worktree: process.argv.includes('--worktree') }, say)
await rm(RUN_DIR, { recursive: true, force: true })
await mkdir(RUN_DIR, { recursive: true })
const upstream = await startUpstream(RUN_DIR, DIRS.cache)
const listFile = join(DIRS.root, 'narinfo-paths.txt')
const wrkScript = join(HERE, 'narinfo.lua')

async function narUrl(base: string, hashPart: string): Promise<string> {
  const r = await getText(`${base}/${hashPart}.narinfo`)
  if (r.status !== 200) throw new Error(`narinfo ${hashPart}: ${r.status}`)
  return `${base}/${/^URL: (.*)$/m.exec(r.text)![1]}`
}

const warmNarinfos = async (base: string) => {
  const urls = manifest.closureHashParts.map((h) => `${base}/${h}.narinfo`)
  await getAll(urls)
  await getAll(urls)
}

/** Prepares narthex for the workload (not profiled separately: keep it short) and runs it. */
async function workload(w: Workload, n: Narthex): Promise<string> {
  switch (w) {
    case 'narinfo': {
      await warmNarinfos(n.url)
      const r = await wrk(n.url, listFile, wrkScript, { seconds: 10 })
      return `${r.rps.toFixed(0)} req/s, p99 ${(r.p99_us / 1000).toFixed(2)} ms (warm-up included in the profile: 1000 narinfo GETs)`
    }
    case 'warmnar': {
      // The NAR was stored by an unprofiled narthex on the same data dir (see below).
      const url = await narUrl(n.url, manifest.big.hashPart)
      const t: number[] = []
      for (let i = 0; i < 5; i++) t.push((await curl(url, manifest.big.fileSize)).total)
      return `5 warm fetches: ${t.map((x) => (manifest.big.fileSize / x / 1e9).toFixed(2)).join(', ')} GB/s`
    }
    case 'coldnar': {
      const url = await narUrl(n.url, manifest.big.hashPart)
      const c = await curl(url, manifest.big.fileSize)
      return `cold fetch ${c.total.toFixed(2)} s, TTFB ${(c.ttfb * 1000).toFixed(1)} ms`
    }
    case 'herd': {
      const url = await narUrl(n.url, manifest.big.hashPart)
      const r = await curlMany(url, 64, manifest.big.fileSize)
      return `64 clients done in ${(r.wallMs / 1000).toFixed(2)} s`
    }
    case 'closure': {
      const store = join(RUN_DIR, 'client-store')
      const env = {
        ...process.env,
        NIX_CONFIG: 'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0',
        XDG_CACHE_HOME: join(RUN_DIR, `xdg-${Date.now()}`),
      }
      const p = await runOk('nix', ['copy', '--from', n.url, '--to', store, manifest.closureTop, '--option', 'trusted-public-keys', n.publicKey], { env, timeoutMs: 600_000 })
      spawnSync('chmod', ['-R', 'u+w', store])
      await rm(store, { recursive: true, force: true })
      return `nix copy of 500 paths: ${(p.ms / 1000).toFixed(2)} s`
    }
    case 'xz': {
      const url = await narUrl(n.url, manifest.xzbig.hashPart)
      const c = await curl(url, manifest.xzbig.fileSize)
      return `cold xz fetch ${c.total.toFixed(2)} s`
    }
  }
}

try {
  for (const w of asked.length ? asked : WORKLOADS) {
    const profDir = join(DIRS.root, 'profiles', `only-${w}`)
    await rm(profDir, { recursive: true, force: true })
    const common = {
      bin: build.bin,
      dir: join(RUN_DIR, 'narthex'),
      signingKeyFile: join(DIRS.root, 'narthex.key'),
      upstreamUrl: upstream.url,
      upstreamPublicKey: manifest.upstreamPublicKey,
    }
    if (w === 'warmnar') {
      // Store the NAR first, without the profiler, so the profile holds warm fetches only.
      const pre = await Narthex.start(common)
      await curl(await narUrl(pre.url, manifest.big.hashPart), manifest.big.fileSize)
      await pre.stop()
    }
    const n = await Narthex.start({
      ...common,
      keepData: w === 'warmnar',
      nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir],
    })
    let outcome: string
    try {
      outcome = await workload(w, n)
    } finally {
      await n.stop()
    }
    say(`${w}: ${outcome}; load ${(await readFile('/proc/loadavg', 'utf8')).trim()}`)
    if (readdirSync(profDir).length === 0) throw new Error(`no profile written in ${profDir}`)
    const top = spawnSync(process.execPath, [join(HERE, 'cpuprofile-top.mjs'), profDir, '--top', '25'], { encoding: 'utf8' })
    process.stdout.write(`\n===== ${w}: ${outcome}\n${top.stdout}${top.stderr}`)
  }
} finally {
  await upstream.stop()
}
