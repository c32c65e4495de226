// One measurement in a fresh Node process (spawned by run.mjs).
//
//   node worker.mjs big   <method> <compressed-file>
//   node worker.mjs small <method> <compressed-file> <iterations>
//
// Prints one JSON line on stdout:
//   { method, digest, ms, cpuMs, lag: { p50, p99, max }, eld: { p99, max } }
// Lag figures are milliseconds.  `lag` comes from a setInterval(1 ms) timer
// (how late each tick fired), recorded into a perf_hooks histogram; `eld` is
// perf_hooks.monitorEventLoopDelay({ resolution: 1 }) with the 1 ms
// resolution subtracted (that histogram records whole intervals).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

const require = createRequire(import.meta.url);
const lzma = require('lzma-native');
const zstd = require('zstd-napi');
const BZT = process.env.UNBZIP2_PREFIX ?? '/tmp/bzt';
const loadUnbzip2 = () => createRequire(`${BZT}/node_modules/`)('unbzip2-stream');

const READ_HWM = 64 * 1024; // what an HTTP body / fs stream typically hands us

// A Writable that feeds a sha256; resolves to the hex digest.
function hashSink() {
  const h = createHash('sha256');
  const sink = new Writable({
    highWaterMark: 1 << 20,
    write(chunk, _enc, cb) { h.update(chunk); cb(); },
    writev(chunks, cb) { for (const { chunk } of chunks) h.update(chunk); cb(); },
  });
  return { sink, digest: () => h.digest('hex') };
}

// Source: a readable over the compressed bytes (file for big, buffer for small).
// Small inputs are wrapped in a core Readable rather than passed to pipeline()
// as an array: lzma-native streams are readable-stream@3 objects, and Node 20's
// pipeline(iterable, lzmaStream, sink) never settles when the single write
// has to wait for 'drain' (seen with a 735 KB .xz chunk; the process just exits).
function source(input) {
  if (typeof input === 'string') return createReadStream(input, { highWaterMark: READ_HWM });
  return Readable.from([input], { objectMode: false });
}

async function viaTransform(input, transform) {
  const { sink, digest } = hashSink();
  if (transform) await pipeline(source(input), transform, sink);
  else await pipeline(source(input), sink);
  return digest();
}

// unbzip2-stream is a classic `through` stream; stream.pipeline() does not
// always see it finish, so wire it by hand.
function viaClassic(input, through) {
  const h = createHash('sha256');
  return new Promise((resolve, reject) => {
    through.on('data', (c) => h.update(c));
    through.on('end', () => resolve(h.digest('hex')));
    through.on('error', reject);
    if (typeof input === 'string') {
      const src = createReadStream(input, { highWaterMark: READ_HWM });
      src.on('error', reject);
      src.pipe(through);
    } else {
      through.end(input);
    }
  });
}

async function viaSpawn(input, cmd, args) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code ?? sig}`)));
  });
  const { sink, digest } = hashSink();
  await Promise.all([
    pipeline(source(input), child.stdin),
    pipeline(child.stdout, sink),
    exited,
  ]);
  return digest();
}

const sha = (buf) => createHash('sha256').update(buf).digest('hex');

export const METHODS = {
  // floor: no decompression
  'node-sha256': (input) => viaTransform(input, null),

  // xz
  'xz:lzma-native': (input) => viaTransform(input, lzma.createDecompressor()),
  'xz:lzma-native-1M': (input) => viaTransform(input, lzma.createDecompressor({ bufsize: 1 << 20 })),
  'xz:lzma-native-oneshot': async (input) => sha(await lzma.decompress(Buffer.isBuffer(input) ? input : readFileSync(input))),
  'xz:spawn': (input) => viaSpawn(input, 'xz', ['-dc']),

  // zstd
  'zst:zstd-napi': (input) => viaTransform(input, new zstd.DecompressStream()),
  'zst:zstd-napi-oneshot': async (input) => sha(zstd.decompress(Buffer.isBuffer(input) ? input : readFileSync(input))),
  'zst:spawn': (input) => viaSpawn(input, 'zstd', ['-dcq']),

  // bzip2
  'bz2:spawn': (input) => viaSpawn(input, 'bzip2', ['-dc']),
  'bz2:unbzip2-stream': (input) => viaClassic(input, loadUnbzip2()()),

  // brotli
  'br:zlib': (input) => viaTransform(input, zlib.createBrotliDecompress()),
  'br:zlib-128K': (input) => viaTransform(input, zlib.createBrotliDecompress({ chunkSize: 128 * 1024 })),
  'br:zlib-sync': async (input) => sha(zlib.brotliDecompressSync(Buffer.isBuffer(input) ? input : readFileSync(input))),
};

function startLagProbe() {
  const lag = createHistogram();
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    lag.record(Math.max(1, Math.round((now - last - 1) * 1000))); // µs late
    last = now;
  }, 1);
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  return () => {
    // a fully synchronous stretch never lets the timer fire: count the
    // overdue tick too
    const now = performance.now();
    if (now - last > 1) lag.record(Math.max(1, Math.round((now - last - 1) * 1000)));
    clearInterval(t);
    eld.disable();
    const ms = (ns) => Math.max(0, ns / 1e6 - 1);
    return {
      lag: { p50: lag.percentile(50) / 1000, p99: lag.percentile(99) / 1000, max: lag.max / 1000 },
      eld: { p99: ms(eld.percentile(99)), max: ms(eld.max) },
    };
  };
}

async function main() {
  const [mode, method, file, itersArg] = process.argv.slice(2);
  const fn = METHODS[method];
  if (!fn) throw new Error(`unknown method ${method}`);
  let digest;
  if (mode === 'big') {
    const cpu0 = process.cpuUsage();
    const stop = startLagProbe();
    const t0 = performance.now();
    digest = await fn(file);
    const ms = performance.now() - t0;
    const probe = stop();
    const cpu = process.cpuUsage(cpu0);
    console.log(JSON.stringify({ method, digest, ms, cpuMs: (cpu.user + cpu.system) / 1000, ...probe }));
  } else if (mode === 'small') {
    const iters = Number(itersArg ?? 200);
    const buf = readFileSync(file); // compressed NAR already in memory, as from an HTTP body
    for (let i = 0; i < 5; i++) digest = await fn(buf); // warm-up (module init, JIT)
    const cpu0 = process.cpuUsage();
    const stop = startLagProbe();
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) {
      const d = await fn(buf);
      if (d !== digest) throw new Error('digest changed between iterations');
      await new Promise(setImmediate); // let timers run between NARs, as a server would
    }
    const ms = performance.now() - t0;
    const probe = stop();
    const cpu = process.cpuUsage(cpu0);
    console.log(JSON.stringify({ method, digest, ms, perFileMs: ms / iters, cpuMs: (cpu.user + cpu.system) / 1000, ...probe }));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => { console.error(e); process.exit(1); });
}
