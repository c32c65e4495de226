#!/usr/bin/env node
// Summarises V8 .cpuprofile files (node --cpu-prof): how busy the main thread was,
// the functions with the most self time, and self time per source file (node
// internals, dependencies, narthex), as shares of the busy (non-idle) time.
//
//   node bench/proxy/cpuprofile-top.mjs FILE_OR_DIR... [--top N]
//
// A directory means every *.cpuprofile in it (their samples are added up).
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const argv = process.argv.slice(2)
const ti = argv.indexOf('--top')
const TOP = ti >= 0 ? Number(argv.splice(ti, 2)[1]) : 25
if (argv.length === 0) {
  console.error('usage: cpuprofile-top.mjs FILE_OR_DIR... [--top N]')
  process.exit(2)
}

const files = argv.flatMap((p) =>
  statSync(p).isDirectory()
    ? readdirSync(p)
        .filter((f) => f.endsWith('.cpuprofile'))
        .map((f) => join(p, f))
    : [p],
)
if (files.length === 0) {
  console.error('no .cpuprofile files found')
  process.exit(1)
}

const byFn = new Map()
const byFile = new Map()
let total = 0
let wall = 0

function shortUrl(url) {
  if (!url) return ''
  const u = url.replace(/^file:\/\//, '')
  const nm = u.lastIndexOf('/node_modules/')
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length)
  const dist = u.lastIndexOf('/dist/')
  if (dist >= 0) return `narthex:${u.slice(dist + '/dist/'.length)}`
  return u.startsWith('/') ? relative(process.cwd(), u) : u
}

for (const file of files) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const nodes = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map()
  // Sample i lasted timeDeltas[i + 1] (V8 records the delta before each sample).
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0
    self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + dt)
  }
  wall += prof.endTime - prof.startTime
  for (const [id, us] of self) {
    const n = nodes.get(id)
    const cf = n.callFrame
    const url = shortUrl(cf.url)
    const name = cf.functionName || '(anonymous)'
    const key = url ? `${name} ${url}:${cf.lineNumber + 1}` : name
    byFn.set(key, (byFn.get(key) ?? 0) + us)
    const area = url ? url.split(':')[0] : name
    byFile.set(area, (byFile.get(area) ?? 0) + us)
    total += us
  }
}

const idle = byFn.get('(idle)') ?? 0
const busy = total - idle
const pct = (us, of) => ((100 * us) / of).toFixed(1).padStart(5)
const ms = (us) => (us / 1000).toFixed(0).padStart(7)
console.log(`${files.length} profile(s), ${(wall / 1e6).toFixed(1)} s profiled; main thread busy ${(busy / 1e6).toFixed(2)} s (${pct(busy, total).trim()}%), idle ${(idle / 1e6).toFixed(2)} s`)
const show = (title, map) => {
  console.log(`\n${title} (self ms, % of busy time):`)
  for (const [k, us] of [...map].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${ms(us)} ${pct(us, busy)}%  ${k}`)
}
show(`Top ${TOP} functions by self time`, byFn)
show('Self time by file or area', byFile)
