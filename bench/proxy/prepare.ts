/**
 * Upstream data for the proxy benchmarks, made once with the real nix (2.8) and
 * kept in bench/.data/ (gitignored):
 *
 * - `closure`: 500 small store paths (NixEnv.buildClosure), heap-shaped DAG of
 *   depth 9 under one top path, in the upstream cache with Nix's default xz;
 * - `big`: one path with a 512 MiB random blob, compression=none;
 * - `xzbig`: one path with a 256 MiB deterministic, partly compressible blob
 *   (AES-CTR keystream, `seq` text, base64), compression=xz.
 *
 * All are signed with the upstream's key `bench-up-1`. The manifest names the
 * paths, their narinfo hash parts and the upstream's NAR URLs and sizes.
 */
import { existsSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NixEnv } from '../../test/helpers/nix.js'

/** Bump when the data's shape changes: an older manifest is rebuilt. */
const DATA_VERSION = 1
export const CLOSURE_SIZE = 500
export const BIG_BYTES = 512 * 1024 * 1024
export const XZ_BLOB_MIB = 256

export interface NarRef {
  readonly storePath: string
  readonly hashPart: string
  /** The NAR's URL relative to the upstream cache root, e.g. `nar/….nar`. */
  readonly url: string
  readonly fileSize: number
  readonly narSize: number
  readonly compression: string
}

export interface Manifest {
  readonly version: number
  readonly createdAt: string
  readonly upstreamPublicKey: string
  readonly closureTop: string
  /** Hash parts of the 500 closure paths. */
  readonly closureHashParts: string[]
  readonly big: NarRef
  readonly xzbig: NarRef
}

export interface DataDirs {
  readonly root: string
  readonly cache: string
  readonly manifest: string
}

export function dataDirs(benchDir: string): DataDirs {
  const root = join(benchDir, '.data')
  return { root, cache: join(root, 'upstream'), manifest: join(root, 'manifest.json') }
}

/** The manifest of the prepared data, for the tools that use what a run of the suite made. */
export async function readManifest(dirs: DataDirs): Promise<Manifest> {
  if (!existsSync(dirs.manifest)) throw new Error('no upstream data: run `npm --prefix bench run bench -- --quick` once first')
  return JSON.parse(await readFile(dirs.manifest, 'utf8')) as Manifest
}

const hashPartOf = (p: string) => p.slice('/nix/store/'.length, '/nix/store/'.length + 32)

function field(narinfo: string, name: string): string {
  const m = new RegExp(`^${name}: (.*)$`, 'm').exec(narinfo)
  if (!m) throw new Error(`narinfo has no ${name}`)
  return m[1]!
}

async function narRef(cache: string, storePath: string): Promise<NarRef> {
  const hashPart = hashPartOf(storePath)
  const text = await readFile(join(cache, `${hashPart}.narinfo`), 'utf8')
  return {
    storePath,
    hashPart,
    url: field(text, 'URL'),
    fileSize: Number(field(text, 'FileSize')),
    narSize: Number(field(text, 'NarSize')),
    compression: field(text, 'Compression'),
  }
}

/** The deterministic 256 MiB xz blob: 64 segments of 1 MiB keystream, 1 MiB `seq` text, 2 MiB base64. */
function xzExpression(salt: string): string {
  return `derivation {
  name = "xzbig"; salt = "${salt}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    export PATH=/usr/bin:/bin
    mkdir -p $out
    ks() { openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass pass:narthex-bench-$1 < /dev/zero 2>/dev/null | head -c $2; }
    i=0
    while [ $i -lt ${XZ_BLOB_MIB / 4} ]; do
      ks r$i 1048576
      seq $((i * 100000)) 999999999 | head -c 1048576
      ks b$i 1572864 | base64 -w 76 | head -c 2097152
      i=$((i + 1))
    done > $out/blob
    echo xzbig > $out/name
  '' ];
}
`
}

/** Returns the manifest, building the data first if it is missing or outdated. */
export async function prepare(benchDir: string, log: (msg: string) => void): Promise<Manifest> {
  const dirs = dataDirs(benchDir)
  if (existsSync(dirs.manifest)) {
    const m = JSON.parse(await readFile(dirs.manifest, 'utf8')) as Manifest
    const complete = [m.big, m.xzbig].every((r) => existsSync(join(dirs.cache, r.url)))
    if (m.version === DATA_VERSION && complete) return m
    log('upstream data outdated or incomplete: rebuilding')
  }
  const started = Date.now()
  await rm(dirs.cache, { recursive: true, force: true })
  await mkdir(dirs.root, { recursive: true })
  const env = await NixEnv.create()
  try {
    const secretKey = (await env.run('nix', ['key', 'generate-secret', '--key-name', 'bench-up-1'])).stdout.trim()
    const publicKey = (await env.run('nix', ['key', 'convert-secret-to-public'], { input: secretKey })).stdout.trim()
    const secretFile = join(dirs.root, 'upstream.sec')
    await writeFile(secretFile, secretKey, { mode: 0o600 })
    await writeFile(join(dirs.root, 'upstream.pub'), publicKey)

    // The closure: node i depends on 2i+1, 2i+2 and 4i+5 (when < N): one top, depth ~9, shared children.
    log(`building a closure of ${CLOSURE_SIZE} small paths`)
    const spec: Record<string, { deps?: string[]; bigBytes?: number }> = {}
    for (let i = 0; i < CLOSURE_SIZE; i++) {
      spec[`p${i}`] = { deps: [2 * i + 1, 2 * i + 2, 4 * i + 5].filter((j) => j < CLOSURE_SIZE).map((j) => `p${j}`) }
    }
    const closure = await env.buildClosure(spec)
    const top = closure.p0!
    const members = await env.closure(top)
    if (members.length !== CLOSURE_SIZE) throw new Error(`closure has ${members.length} paths, expected ${CLOSURE_SIZE}`)

    log(`building a path with a ${BIG_BYTES >> 20} MiB random blob`)
    const { big } = await env.buildClosure({ big: { bigBytes: BIG_BYTES } })

    log(`building a path with a ${XZ_BLOB_MIB} MiB partly compressible blob`)
    const xzFile = join(env.dir, 'xzbig.nix')
    await writeFile(xzFile, xzExpression(String(Date.now())))
    const xzbig = (await env.run('nix-build', [xzFile, '--no-out-link'], { timeoutMs: 600_000 })).stdout.trim()

    await env.run('nix', ['store', 'sign', '--key-file', secretFile, '-r', top, big!, xzbig])
    const url = `file://${dirs.cache}`
    log('nix copy: closure (xz)')
    await env.run('nix', ['copy', '--to', url, top], { timeoutMs: 600_000 })
    log('nix copy: big path (compression=none)')
    await env.run('nix', ['copy', '--to', `${url}?compression=none`, big!], { timeoutMs: 600_000 })
    log('nix copy: xz path (compression=xz, parallel-compression; takes a minute or two)')
    await env.run('nix', ['copy', '--to', `${url}?compression=xz&parallel-compression=true`, xzbig], { timeoutMs: 1_200_000 })

    const manifest: Manifest = {
      version: DATA_VERSION,
      createdAt: new Date().toISOString(),
      upstreamPublicKey: publicKey,
      closureTop: top,
      closureHashParts: members.map(hashPartOf),
      big: await narRef(dirs.cache, big!),
      xzbig: await narRef(dirs.cache, xzbig),
    }
    if (manifest.big.fileSize < BIG_BYTES || manifest.xzbig.narSize < XZ_BLOB_MIB << 20) throw new Error('the big NARs are smaller than asked')
    if (manifest.big.compression !== 'none' || manifest.xzbig.compression !== 'xz') throw new Error('unexpected compression')
    await writeFile(dirs.manifest, JSON.stringify(manifest, null, 2))
    log(`upstream data ready in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    return manifest
  } finally {
    await env.cleanup()
  }
}
