/**
 * Binary caches and a narthex {@link Cache} built in-process, without `nix`: store paths whose
 * NARs are written by nar-writer.ts and whose narinfos are made and signed with src/protocol,
 * served by the fault-injecting static server, in front of a real {@link Store} and
 * {@link AuditLog} in a temporary directory.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Cache, Metrics, type CacheSettings } from '../../src/cache/index.js'
import { compilePolicy, type PolicyInput } from '../../src/policy/index.js'
import {
  encodeNix32,
  formatNarInfo,
  formatPublicKey,
  generateSecretKey,
  parseStorePath,
  sha256Of,
  signNarInfo,
  toPublicKey,
  type NarInfo,
  type SecretKey,
} from '../../src/protocol/index.js'
import { AuditLog, auditLogPath, readAuditLog, Store, type AuditEntry } from '../../src/store/index.js'
import { Upstream, type UpstreamOptions } from '../../src/upstream/index.js'
import { writeNar } from './nar-writer.js'
import { startStaticServer, type StaticServer } from './static-server.js'

/** A store path with its NAR and the narinfo an upstream serves for it (uncompressed, signed). */
export interface FakePath {
  /** `/nix/store/<hash>-<name>`. */
  readonly storePath: string
  readonly hashPart: string
  readonly nar: Buffer
  readonly info: NarInfo
  /** The NAR file name narthex serves it under: `<NarHash nix32>.nar`. */
  readonly fileName: string
}

/**
 * A store path holding one regular file with `contents`, its narinfo signed by `key` (unsigned
 * without one). The hash part is derived from `name`, so a name always gives the same path.
 */
export function fakePath(name: string, contents: string, key?: SecretKey, references: readonly string[] = []): FakePath {
  const hashPart = encodeNix32(createHash('sha256').update(name).digest().subarray(0, 20))
  const storePath = `/nix/store/${hashPart}-${name}`
  const nar = writeNar({ type: 'regular', contents })
  const narHash = sha256Of(nar)
  const fileName = `${encodeNix32(narHash.digest)}.nar`
  const unsigned: NarInfo = {
    storePath: parseStorePath(storePath),
    url: `nar/${fileName}`,
    compression: 'none',
    fileHash: narHash,
    fileSize: nar.length,
    narHash,
    narSize: nar.length,
    references: [...references].sort(),
    sigs: [],
  }
  return { storePath, hashPart, nar, info: key ? signNarInfo(unsigned, key) : unsigned, fileName }
}

/** The basename `<hash>-<name>` of a path, as narinfo `References:` lists it. */
export function baseOf(path: FakePath): string {
  return path.storePath.slice('/nix/store/'.length)
}

/** Writes a path's narinfo and NAR into the binary-cache directory `dir`; `nar` replaces the NAR file's bytes. */
export async function addToCache(dir: string, path: FakePath, options: { nar?: Buffer; narinfo?: boolean; narFile?: boolean } = {}): Promise<void> {
  await mkdir(join(dir, 'nar'), { recursive: true })
  if (options.narinfo !== false) await writeFile(join(dir, `${path.hashPart}.narinfo`), formatNarInfo(path.info))
  if (options.narFile !== false) await writeFile(join(dir, path.info.url), options.nar ?? path.nar)
}

/** One fake upstream: a cache directory served by the static server, and its signing key. */
export interface FakeUpstream {
  readonly name: string
  readonly dir: string
  readonly key: SecretKey
  readonly server: StaticServer
}

/** A running {@link Cache} over fake upstreams; `close()` stops and removes everything. */
export interface CacheUnderTest {
  readonly cache: Cache
  readonly metrics: Metrics
  readonly store: Store
  readonly upstreams: readonly Upstream[]
  readonly fakes: readonly FakeUpstream[]
  /** narthex's own signing key. */
  readonly key: SecretKey
  readonly dataDir: string
  /** The audit log's entries so far (flushed first). */
  auditEntries(): Promise<AuditEntry[]>
  close(): Promise<void>
}

/** Options of {@link startCache}. */
export interface StartCacheOptions {
  /** Upstream names, in priority order (default one: `up-1`). Each gets a key named after it. */
  readonly upstreams?: readonly string[]
  /** Overrides of each upstream's options (timeouts, retries, failureThreshold, …). */
  readonly upstream?: Partial<UpstreamOptions>
  /** Default: one rule, `*` from every upstream, one signature by their keys. */
  readonly rules?: PolicyInput['rules']
  readonly settings?: Partial<CacheSettings>
}

/** Starts fake upstreams (empty cache directories) and a {@link Cache} in front of them. */
export async function startCache(options: StartCacheOptions = {}): Promise<CacheUnderTest> {
  const root = await mkdtemp(join(tmpdir(), 'narthex-cache-test-'))
  const names = options.upstreams ?? ['up-1']
  const fakes: FakeUpstream[] = []
  for (const name of names) {
    const dir = join(root, `upstream-${name}`)
    await mkdir(join(dir, 'nar'), { recursive: true })
    fakes.push({ name, dir, key: generateSecretKey(name), server: await startStaticServer(dir) })
  }
  const upstreams = fakes.map(
    (f) =>
      new Upstream({
        name: f.name,
        url: f.server.url,
        timeoutMs: 2000,
        retries: 0,
        maxConnections: 8,
        minBytesPerSecond: 0,
        failureThreshold: 3,
        downForMs: 30_000,
        ...options.upstream,
      }),
  )
  const policy = compilePolicy({
    upstreams: fakes.map((f) => ({ name: f.name, publicKeys: [formatPublicKey(toPublicKey(f.key))] })),
    rules: options.rules ?? [{ match: ['*'], upstreams: names, minSignatures: 1 }],
  })
  const dataDir = join(root, 'data')
  const { store } = await Store.open(dataDir)
  const audit = await AuditLog.open(dataDir)
  const key = generateSecretKey('narthex-test')
  const metrics = new Metrics()
  const cache = new Cache({
    store,
    upstreams,
    policy,
    signingKeys: [key],
    log: pino({ level: 'silent' }),
    metrics,
    audit,
    settings: {
      negativeTtlMs: 60_000,
      unavailableTtlMs: 0,
      narinfoLruEntries: 1000,
      prefetchReferences: false,
      prefetchNars: false,
      prefetchMaxInFlight: 4,
      ...options.settings,
    },
  })
  return {
    cache,
    metrics,
    store,
    upstreams,
    fakes,
    key,
    dataDir,
    auditEntries: () => flushedAuditEntries(audit, dataDir),
    async close() {
      await cache.close()
      await Promise.all(upstreams.map((u) => u.close()))
      await Promise.all(fakes.map((f) => f.server.close()))
      await store.close()
      await rm(root, { recursive: true, force: true })
    },
  }
}

/** Every entry of the audit log in `dataDir`, after `audit`'s pending appends are written. */
export async function flushedAuditEntries(audit: AuditLog, dataDir: string): Promise<AuditEntry[]> {
  await audit.flush()
  const entries: AuditEntry[] = []
  if (!existsSync(auditLogPath(dataDir))) return entries
  for await (const { entry } of readAuditLog(auditLogPath(dataDir))) if (entry) entries.push(entry)
  return entries
}
