/**
 * `narthex mirror`, `export` and `import`: seeding an air-gapped network.
 * Each opens the data directory itself, so narthex must not be serving from it.
 */
import { createReadStream } from 'node:fs'
import { type Readable } from 'node:stream'
import { SingleBar, Presets } from 'cli-progress'
import { exportClosures, importCache, mirrorClosures, PushReceiver, type PathFailure } from '../cache/index.js'
import type { Config } from '../config/index.js'
import { NarthexError } from '../errors.js'
import { withoutDeniedKeys } from '../policy/index.js'
import { parsePublicKey, parseStorePathLoose } from '../protocol/index.js'
import { createDecompressor } from '../store/index.js'
import { createLogger, openCore } from './app.js'

type Out = (line: string) => void

/** A progress bar on a terminal (stderr), nothing otherwise. */
function progress(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined }
  const bar = new SingleBar({ format: `${label} [{bar}] {value}/{total} paths`, stream: process.stderr, hideCursor: true }, Presets.shades_classic)
  bar.start(1, 0)
  return {
    update: (done, total) => {
      bar.setTotal(total)
      bar.update(done)
    },
    stop: () => bar.stop(),
  }
}

function report(out: Out, verb: string, count: number, failed: readonly PathFailure[]): number {
  out(`${verb} ${count} path(s)${failed.length ? `; ${failed.length} failed:` : ''}`)
  for (const f of failed) out(`  ${f.path}: ${f.reason}`)
  return failed.length > 0 ? 1 : 0
}

/** Reads store paths, one per line, from a plain or `.xz` file (a channel's `store-paths.xz`). */
async function readPathList(file: string): Promise<string[]> {
  const source = createReadStream(file)
  const stream: Readable = file.endsWith('.xz') ? source.pipe(createDecompressor('xz')) : source
  let text = ''
  for await (const chunk of stream) text += (chunk as Buffer).toString('utf8')
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
}

function hashParts(paths: readonly string[]): string[] {
  return paths.map((p) => parseStorePathLoose(p).hashPart)
}

/** `narthex mirror [PATH…] [--from-file F]`. */
export async function runMirror(config: Config, paths: readonly string[], fromFile: string | undefined, out: Out): Promise<number> {
  const all = [...paths, ...(fromFile ? await readPathList(fromFile) : [])]
  if (all.length === 0) throw new NarthexError('BAD_REQUEST', 'name store paths to mirror, or --from-file')
  const roots = hashParts(all)
  const core = await openCore(config, createLogger('warn'), { prefetch: false })
  const bar = progress('mirroring')
  try {
    const { mirrored, failed } = await mirrorClosures(core.cache, core.store, roots, { onProgress: bar.update })
    bar.stop()
    return report(out, 'mirrored and pinned', mirrored.length, failed)
  } finally {
    bar.stop()
    await core.close()
  }
}

/** `narthex export --to DIR [PATH…]`. */
export async function runExport(config: Config, dir: string, paths: readonly string[], out: Out): Promise<number> {
  const core = await openCore(config, createLogger('warn'), { prefetch: false })
  const bar = progress('exporting')
  try {
    // What the deny lists now deny is not exported.
    await core.denyApplied
    const { exported, failed } = await exportClosures(core.cache, core.store, dir, paths.length ? hashParts(paths) : undefined, {
      priority: config.priority,
      onProgress: bar.update,
    })
    bar.stop()
    const code = report(out, `exported to ${dir}`, exported.length, failed)
    out(`clients (or narthex import) trust it with: ${core.publicKeys.join(' ')}`)
    return code
  } finally {
    bar.stop()
    await core.close()
  }
}

/** `narthex import DIR`. */
export async function runImport(config: Config, dir: string, out: Out): Promise<number> {
  if (!config.import) {
    throw new NarthexError('CONFIG_INVALID', `${config.source ?? 'the config'}: set import.publicKeys (the keys an imported cache must be signed with, e.g. the exporting narthex's)`)
  }
  const log = createLogger('warn')
  const core = await openCore(config, log, { prefetch: false })
  const receiver = new PushReceiver({
    store: core.store,
    audit: core.audit,
    log,
    settings: { publicKeys: withoutDeniedKeys(core.policy, config.import.publicKeys.map(parsePublicKey)), minSignatures: config.import.minSignatures, maxNarBytes: Number.MAX_SAFE_INTEGER },
    onAdmitted: (hashPart) => core.cache.forget(hashPart),
  })
  const bar = progress('importing')
  try {
    const { imported, unchanged, failed } = await importCache(receiver, core.store, dir, bar.update)
    bar.stop()
    if (unchanged.length) out(`${unchanged.length} path(s) were already in the store`)
    return report(out, 'imported and pinned', imported.length, failed)
  } finally {
    bar.stop()
    await core.close()
  }
}
