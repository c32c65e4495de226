#!/usr/bin/env node
// Decompress-and-hash benchmark for narthex NAR verification.
//
//   node bench/decompress/run.mjs [--runs N] [--keep] [--only REGEX] [--skip-big] [--skip-small]
//   node bench/decompress/run.mjs --report /tmp/narbench/results.json   (re-print tables)
//   env: NARBENCH_DIR (default /tmp/narbench), NARBENCH_BIG_MIB (default 256),
//        NARBENCH_SRC=/usr/bin (dump a real tree as the big NAR instead),
//        UNBZIP2_PREFIX (default /tmp/bzt)
//
// Prepares test data under $NARBENCH_DIR (default /tmp/narbench) if missing,
// runs every method in a fresh Node process (worker.mjs) RUNS times,
// round-robin, and prints median wall times plus event-loop lag.
// Big files are deleted at the end unless --keep is given.
//
// Needs: xz, zstd, bzip2, sha256sum, nix-store (only for the NAR dump; a
// hand-written NAR serialiser is used if nix-store is absent).  Optional:
// unbzip2-stream installed with `npm install --prefix /tmp/bzt unbzip2-stream`.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const WORKER = path.join(here, 'worker.mjs');
const DIR = process.env.NARBENCH_DIR ?? '/tmp/narbench';
const BZT = process.env.UNBZIP2_PREFIX ?? '/tmp/bzt';
const MiB = 1 << 20;

const argv = process.argv.slice(2);
const flag = (f) => argv.includes(f);
const opt = (f, d) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : d; };
const RUNS = Number(opt('--runs', 3));
const ONLY = opt('--only') ? new RegExp(opt('--only')) : null;
const BIG_MIB = Number(process.env.NARBENCH_BIG_MIB ?? 256);
// Optional: use a real directory (e.g. /usr/bin) for the big NAR instead of synthetic data.
const SRC = process.env.NARBENCH_SRC;

const log = (...a) => console.error('[bench]', ...a);
const hasUnbzip2 = fs.existsSync(path.join(BZT, 'node_modules/unbzip2-stream'));

// ---------------------------------------------------------------- data ----

// Semi-compressible content, in segments of up to 4 MiB: half random bytes,
// a quarter `seq`-style text, a quarter base64 of random bytes.
async function writeMixed(file, mib) {
  const out = fs.createWriteStream(file);
  const total = mib * MiB;
  const segSize = Math.min(4 * MiB, total);
  let n = 1;
  async function* gen() {
    for (let done = 0; done < total; done += segSize) {
      const seg = Math.min(segSize, total - done);
      const rnd = seg >> 1;
      const txt = seg >> 2;
      const b64 = seg - rnd - txt;
      yield randomBytes(rnd);
      let s = '';
      while (s.length < txt) s += `${n++}\n`;
      yield Buffer.from(s.slice(0, txt));
      yield Buffer.from(randomBytes(Math.ceil(b64 * 3 / 4) + 3).toString('base64').slice(0, b64));
    }
  }
  await pipeline(gen(), out);
}

// Minimal NAR serialiser (regular files + directories), used if nix-store is absent.
function narDump(p) {
  const parts = [];
  const str = (s) => {
    const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
    const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(b.length));
    parts.push(len, b, Buffer.alloc((8 - (b.length % 8)) % 8));
  };
  const node = (q) => {
    const st = fs.lstatSync(q);
    str('(');
    if (st.isDirectory()) {
      str('type'); str('directory');
      for (const name of fs.readdirSync(q).sort()) {
        str('entry'); str('('); str('name'); str(name); str('node'); node(path.join(q, name)); str(')');
      }
    } else if (st.isFile()) {
      str('type'); str('regular');
      if (st.mode & 0o100) { str('executable'); str(''); }
      str('contents'); str(fs.readFileSync(q));
    } else throw new Error(`unsupported file type: ${q}`);
    str(')');
  };
  str('nix-archive-1'); node(p);
  return Buffer.concat(parts);
}

function makeNar(srcDir, narFile) {
  const r = spawnSync('nix-store', ['--dump', srcDir], { maxBuffer: 1 << 30, stdio: ['ignore', fs.openSync(narFile, 'w'), 'inherit'] });
  if (r.error || r.status !== 0) {
    log('nix-store --dump unavailable, using built-in NAR writer');
    fs.writeFileSync(narFile, narDump(srcDir));
  }
}

const sh = (cmd) => new Promise((resolve, reject) => {
  const c = spawn('bash', ['-o', 'pipefail', '-c', cmd], { stdio: ['ignore', 'inherit', 'inherit'] });
  c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd}: exit ${code}`))));
});

async function brotliCompress(inp, out) {
  const size = fs.statSync(inp).size;
  await pipeline(fs.createReadStream(inp), zlib.createBrotliCompress({
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 5,
      [zlib.constants.BROTLI_PARAM_LGWIN]: 22,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: size,
    },
  }), fs.createWriteStream(out));
}

// Compress `nar` into nar.xz/.zst/.bz2/.br (two at a time: 2-core box).
async function compressAll(nar) {
  const jobs = [
    () => sh(`xz -6 -T1 -c '${nar}' > '${nar}.xz.tmp' && mv '${nar}.xz.tmp' '${nar}.xz'`),
    () => sh(`bzip2 -9 -c '${nar}' > '${nar}.bz2.tmp' && mv '${nar}.bz2.tmp' '${nar}.bz2'`),
    () => sh(`zstd -3 -T1 -q -c '${nar}' > '${nar}.zst.tmp' && mv '${nar}.zst.tmp' '${nar}.zst'`),
    async () => { await brotliCompress(nar, `${nar}.br.tmp`); fs.renameSync(`${nar}.br.tmp`, `${nar}.br`); },
  ];
  const exts = ['xz', 'bz2', 'zst', 'br'];
  const todo = jobs.filter((_, i) => !fs.existsSync(`${nar}.${exts[i]}`));
  for (let i = 0; i < todo.length; i += 2) await Promise.all(todo.slice(i, i + 2).map((j) => j()));
}

async function prepare() {
  fs.mkdirSync(DIR, { recursive: true });
  const sets = {};
  // big: one directory holding a BIG_MIB file (+ a small file, to make it a real tree)
  const big = path.join(DIR, 'big.nar');
  if (!flag('--skip-big')) {
    if (!fs.existsSync(big) && SRC) {
      log(`dumping ${SRC} as the big NAR…`);
      makeNar(SRC, big);
    } else if (!fs.existsSync(big)) {
      log(`generating ${BIG_MIB} MiB NAR…`);
      const src = path.join(DIR, 'src-big');
      fs.rmSync(src, { recursive: true, force: true });
      fs.mkdirSync(path.join(src, 'share'), { recursive: true });
      await writeMixed(path.join(src, 'share', 'blob'), BIG_MIB);
      fs.writeFileSync(path.join(src, 'README'), 'narthex decompress benchmark\n');
      makeNar(src, big);
      fs.rmSync(src, { recursive: true, force: true });
    }
    log('compressing big NAR (xz -6 is the slow one, ~1-2 min)…');
    await compressAll(big);
    sets.big = big;
  }
  // small (~4 KiB .xz) and mid sizes for the fixed-cost / crossover test
  const sized = { small: null, '256K': 0.25, '1M': 1, '16M': 16 };
  for (const [name, mib] of Object.entries(flag('--skip-small') ? {} : sized)) {
    const nar = path.join(DIR, `${name}.nar`);
    if (!fs.existsSync(nar)) {
      const src = path.join(DIR, `src-${name}`);
      fs.rmSync(src, { recursive: true, force: true });
      fs.mkdirSync(path.join(src, 'bin'), { recursive: true });
      if (mib === null) {
        // ~4 KiB once xz'd: 3 KiB of "machine code" + ~10 KiB of text
        fs.writeFileSync(path.join(src, 'bin', 'tool'), randomBytes(3072), { mode: 0o755 });
        let s = ''; for (let i = 1; s.length < 10000; i++) s += `line ${i}: the quick brown fox ${i * 7919 % 1000}\n`;
        fs.writeFileSync(path.join(src, 'README'), s);
      } else {
        await writeMixed(path.join(src, 'bin', 'tool'), mib);
      }
      makeNar(src, nar);
      fs.rmSync(src, { recursive: true, force: true });
    }
    await compressAll(nar);
    sets[name] = nar;
  }
  return sets;
}

// ------------------------------------------------------------- methods ----

const BIG_METHODS = [
  // [label, kind, method-or-shell-cmd, ext]
  ['sha256sum (shell floor)', 'shell', (n) => `sha256sum '${n}'`, ''],
  ['node sha256 (floor)', 'node', 'node-sha256', ''],
  ['xz -dc | sha256sum', 'shell', (n) => `xz -dc '${n}.xz' | sha256sum`, 'xz'],
  ['xz: lzma-native stream', 'node', 'xz:lzma-native', 'xz'],
  ['xz: lzma-native bufsize 1M', 'node', 'xz:lzma-native-1M', 'xz'],
  ['xz: spawn xz -dc', 'node', 'xz:spawn', 'xz'],
  ['zstd -dc | sha256sum', 'shell', (n) => `zstd -dcq '${n}.zst' | sha256sum`, 'zst'],
  ['zst: zstd-napi DecompressStream', 'node', 'zst:zstd-napi', 'zst'],
  ['zst: spawn zstd -dc', 'node', 'zst:spawn', 'zst'],
  ['bzip2 -dc | sha256sum', 'shell', (n) => `bzip2 -dc '${n}.bz2' | sha256sum`, 'bz2'],
  ['bz2: spawn bzip2 -dc', 'node', 'bz2:spawn', 'bz2'],
  ...(hasUnbzip2 ? [['bz2: unbzip2-stream', 'node', 'bz2:unbzip2-stream', 'bz2']] : []),
  ['br: zlib.createBrotliDecompress', 'node', 'br:zlib', 'br'],
  ['br: createBrotliDecompress chunk 128K', 'node', 'br:zlib-128K', 'br'],
];

const SMALL_METHODS = [
  ['node sha256 (no decompression)', 'node-sha256', ''],
  ['xz: lzma-native stream', 'xz:lzma-native', 'xz'],
  ['xz: lzma-native decompress() one-shot', 'xz:lzma-native-oneshot', 'xz'],
  ['xz: spawn xz -dc', 'xz:spawn', 'xz'],
  ['zst: zstd-napi DecompressStream', 'zst:zstd-napi', 'zst'],
  ['zst: zstd-napi decompress() one-shot', 'zst:zstd-napi-oneshot', 'zst'],
  ['zst: spawn zstd -dc', 'zst:spawn', 'zst'],
  ['bz2: spawn bzip2 -dc', 'bz2:spawn', 'bz2'],
  ...(hasUnbzip2 ? [['bz2: unbzip2-stream', 'bz2:unbzip2-stream', 'bz2']] : []),
  ['br: zlib.createBrotliDecompress', 'br:zlib', 'br'],
  ['br: zlib.brotliDecompressSync', 'br:zlib-sync', 'br'],
];
const SIZED_ITERS = { small: 200, '256K': 100, '1M': 40, '16M': 6 };

const fileFor = (nar, ext) => (ext ? `${nar}.${ext}` : nar);

// The box may be shared: before each measurement wait (up to QUIET_MAX_S)
// until the other processes use < 15% of the machine over 300 ms.
const QUIET_MAX_S = Number(process.env.NARBENCH_QUIET_MAX_S ?? 600);
const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
function cpuTimes() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] || 0);
  return { total: f.reduce((a, b) => a + b, 0), idle };
}
function busyFraction(ms = 300) {
  const a = cpuTimes(); sleepSync(ms); const b = cpuTimes();
  const dt = b.total - a.total;
  return dt > 0 ? (dt - (b.idle - a.idle)) / dt : 0;
}
let contendedWaits = 0;
function waitQuiet() {
  if (!fs.existsSync('/proc/stat')) return 0;
  const t0 = Date.now();
  let busy = busyFraction();
  if (busy < 0.15) return busy;
  contendedWaits++;
  log(`machine busy (${(busy * 100).toFixed(0)}% of ${os.cpus().length} CPUs used by others), waiting…`);
  while (busy >= 0.15 && Date.now() - t0 < QUIET_MAX_S * 1000) { sleepSync(2000); busy = busyFraction(); }
  if (busy >= 0.15) log(`still busy after ${QUIET_MAX_S}s (${(busy * 100).toFixed(0)}%), measuring anyway`);
  return busy;
}

// CPU ticks this process and its reaped descendants (workers, xz, bash…) used.
function ownTicks() {
  const f = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]); // utime stime cutime cstime
}
// Run `fn` (synchronous: spawnSync inside); if other processes used more than
// 10% of the machine meanwhile, log it and retry (up to 4 times).
const RETRY_OTHERS = Number(process.env.NARBENCH_MAX_OTHERS ?? 0.1);
let contendedRetries = 0;
function measured(label, fn) {
  for (let attempt = 1; ; attempt++) {
    waitQuiet();
    const s0 = cpuTimes(); const o0 = ownTicks();
    const r = fn();
    const s1 = cpuTimes(); const o1 = ownTicks();
    const dt = s1.total - s0.total;
    const others = dt > 0 ? Math.max(0, (dt - (s1.idle - s0.idle)) - (o1 - o0)) / dt : 0;
    r.others = others;
    if (others <= RETRY_OTHERS || attempt >= 5) {
      if (others > RETRY_OTHERS) log(`${label}: still contended (${(others * 100).toFixed(0)}%) after ${attempt} attempts, keeping it`);
      return r;
    }
    contendedRetries++;
    log(`${label}: other processes used ${(others * 100).toFixed(0)}% of the machine during the run, retrying`);
  }
}

function runWorker(args) {
  const r = spawnSync(process.execPath, [WORKER, ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`worker ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function runShell(cmd) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return { digest: r.stdout.split(/\s/)[0], ms };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const fmt = (x, d = 2) => (x === undefined || x === null || Number.isNaN(x) ? '–' : x.toFixed(d));

function table(headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(' | ')} |`;
  return [line(headers), `|${w.map((x, i) => (i === 0 ? '-'.repeat(x + 2) : `${'-'.repeat(x + 1)}:`)).join('|')}|`, ...rows.map(line)].join('\n');
}

function sizeOf(f) { return fs.statSync(f).size; }

const busyCol = (rs) => `${rs.filter((r) => (r.others ?? 0) > RETRY_OTHERS).length}/${rs.length}`;
// Each raw result carries inputBytes/narBytes so --report can re-render it.
const withSizes = (r, nar, ext) => Object.assign(r, { inputBytes: sizeOf(fileFor(nar, ext)), narBytes: sizeOf(nar) });

function renderBig(res, kinds) {
  const rows = Object.entries(res).map(([label, rs]) => {
    const ms = median(rs.map((r) => r.ms));
    const node = kinds[label] === 'node';
    const narBytes = rs[0].narBytes;
    return [
      label,
      (rs[0].inputBytes / MiB).toFixed(1),
      fmt(ms / 1000), `${fmt(Math.min(...rs.map((r) => r.ms)) / 1000)}–${fmt(Math.max(...rs.map((r) => r.ms)) / 1000)}`,
      fmt(narBytes / MiB / (ms / 1000), 0),
      node ? fmt(median(rs.map((r) => r.cpuMs)) / 1000) : '–',
      node ? fmt(median(rs.map((r) => r.lag.p99))) : '–',
      node ? fmt(Math.max(...rs.map((r) => r.lag.max))) : '–',
      node ? fmt(Math.max(...rs.map((r) => r.eld.max))) : '–',
      busyCol(rs),
    ];
  });
  const n = Object.values(res)[0]?.length ?? RUNS;
  return table(['method', 'input MiB', `wall s (median of ${n})`, 'min–max s', 'MiB/s (NAR)', 'node CPU s', 'lag p99 ms', 'lag max ms', 'ELD max ms', 'contended'], rows);
}

function renderSized(res, iters) {
  const rows = Object.entries(res).map(([label, rs]) => [
    label,
    `${rs[0].inputBytes}`,
    fmt(median(rs.map((r) => r.ms))),
    fmt(median(rs.map((r) => r.perFileMs)), 3),
    fmt(median(rs.map((r) => r.cpuMs)) / iters, 3),
    fmt(median(rs.map((r) => r.lag.p99))),
    fmt(Math.max(...rs.map((r) => r.lag.max))),
    busyCol(rs),
  ]);
  const n = Object.values(res)[0]?.length ?? RUNS;
  return table(['method', 'input bytes', `total ms (${iters} files, median of ${n})`, 'ms / file', 'node CPU ms / file', 'lag p99 ms', 'lag max ms', 'contended'], rows);
}

const BIG_KINDS = Object.fromEntries(BIG_METHODS.map(([l, k]) => [l, k]));

async function benchBig(nar) {
  const expected = createHash('sha256').update(fs.readFileSync(nar)).digest('hex');
  const methods = BIG_METHODS.filter(([label, , m]) => !ONLY || ONLY.test(label) || ONLY.test(String(m)));
  const res = Object.fromEntries(methods.map(([l]) => [l, []]));
  for (let round = 0; round < RUNS; round++) {
    for (const [label, kind, m, ext] of methods) {
      const f = fileFor(nar, ext);
      const r = measured(label, () => (kind === 'shell' ? runShell(m(nar)) : runWorker(['big', m, f])));
      if (r.digest !== expected) throw new Error(`${label}: digest mismatch ${r.digest} != ${expected}`);
      res[label].push(withSizes(r, nar, ext));
      log(`big round ${round + 1}/${RUNS} ${label}: ${(r.ms / 1000).toFixed(2)} s`);
    }
  }
  return { raw: res, text: renderBig(res, BIG_KINDS) };
}

async function benchSized(name, nar) {
  const iters = SIZED_ITERS[name];
  const expected = createHash('sha256').update(fs.readFileSync(nar)).digest('hex');
  const methods = SMALL_METHODS.filter(([label, m]) => !ONLY || ONLY.test(label) || ONLY.test(m));
  const res = Object.fromEntries(methods.map(([l]) => [l, []]));
  for (let round = 0; round < RUNS; round++) {
    for (const [label, m, ext] of methods) {
      const r = measured(`${name} ${label}`, () => runWorker(['small', m, fileFor(nar, ext), String(iters)]));
      if (r.digest !== expected) throw new Error(`${label}: digest mismatch`);
      res[label].push(withSizes(r, nar, ext));
      log(`${name} round ${round + 1}/${RUNS} ${label}: ${r.perFileMs.toFixed(3)} ms/file`);
    }
  }
  return { raw: res, text: renderSized(res, iters), narBytes: sizeOf(nar), iters };
}

function printHeader(name, narBytes, iters, src = SRC) {
  if (name === 'big') {
    console.log(`\n## ${src ? `NAR of ${src}` : 'synthetic NAR'} (${(narBytes / MiB).toFixed(1)} MiB): decompress + sha256 (wall = whole pipeline)\n`);
    console.log('xz -6 -T1, zstd -3, bzip2 -9, brotli q5/lgwin22 (node zlib). "contended" = runs during which other processes');
    console.log(`still used > ${RETRY_OTHERS * 100}% of the machine after retries.\n`);
  } else {
    console.log(`\n## ${name} NAR (${narBytes} bytes uncompressed): ${iters} sequential decompress+sha256 in one process\n`);
  }
}

// --report FILE: re-render the tables of an earlier results.json
function report(file) {
  const out = JSON.parse(fs.readFileSync(file, 'utf8'));
  console.log('## Machine / versions\n');
  for (const [k, val] of Object.entries(out.env)) console.log(`- ${k}: ${val}`);
  for (const [name, res] of Object.entries(out.results)) {
    const first = Object.values(res)[0][0];
    if (name === 'big') { printHeader(name, first.narBytes, undefined, out.src); console.log(renderBig(res, BIG_KINDS)); }
    else { printHeader(name, first.narBytes, SIZED_ITERS[name]); console.log(renderSized(res, SIZED_ITERS[name])); }
  }
}

function versions() {
  const v = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').map((l) => l.trim()).find(Boolean) ?? String(r.error);
  };
  const lz = require('lzma-native');
  const zb = require('zstd-napi/binding');
  const pkg = (p) => JSON.parse(fs.readFileSync(p, 'utf8')).version;
  const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpu: (cpu.match(/^model name\s*:\s*(.*)$/m) || [])[1],
    sha_ni: /\bsha_ni\b/.test(cpu),
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    node: process.version,
    openssl: process.versions.openssl,
    nodeBrotli: process.versions.brotli,
    lzmaNative: `${pkg(require.resolve('lzma-native/package.json'))} (liblzma ${lz.versionString()})`,
    zstdNapi: `${pkg(path.join(path.dirname(require.resolve('zstd-napi')), '..', 'package.json'))} (libzstd ${zb.versionString()})`,
    unbzip2Stream: hasUnbzip2 ? pkg(path.join(BZT, 'node_modules/unbzip2-stream/package.json')) : 'not installed',
    xz: v('xz', ['--version']),
    zstd: v('zstd', ['--version']),
    bzip2: v('bzip2', ['--version']),
    sha256sum: v('sha256sum', ['--version']),
    nixStore: v('nix-store', ['--version']),
  };
}

async function main() {
  if (opt('--report')) return report(opt('--report'));
  const env = versions();
  console.log('## Machine / versions\n');
  for (const [k, val] of Object.entries(env)) console.log(`- ${k}: ${val}`);
  const sets = await prepare();
  const out = { env, src: SRC ?? null, results: {} };
  if (sets.big) {
    log('big NAR benchmark…');
    const r = await benchBig(sets.big);
    out.results.big = r.raw;
    printHeader('big', sizeOf(sets.big));
    console.log(r.text);
  }
  if (!flag('--skip-small')) {
    for (const name of Object.keys(SIZED_ITERS)) {
      log(`${name} NAR benchmark…`);
      const r = await benchSized(name, sets[name]);
      out.results[name] = r.raw;
      printHeader(name, r.narBytes, r.iters);
      console.log(r.text);
    }
  }
  out.contendedWaits = contendedWaits;
  out.contendedRetries = contendedRetries;
  if (contendedWaits || contendedRetries) console.log(`\n(note: shared machine: waited for quiet ${contendedWaits} time(s), re-ran ${contendedRetries} contended measurement(s))`);
  fs.writeFileSync(path.join(DIR, 'results.json'), JSON.stringify(out, null, 2));
  log(`raw results: ${path.join(DIR, 'results.json')}`);
  if (!flag('--keep')) {
    for (const f of fs.readdirSync(DIR)) if (/^(big|16M)\.nar/.test(f)) fs.rmSync(path.join(DIR, f));
    log('deleted big NAR files (use --keep to keep them)');
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
