/**
 * `narthex verify` (the built CLI) on a store holding NARs in several compressions, run on a
 * machine that lacks one decoder (`lzip` left out of PATH): a file it cannot decode is reported
 * as not checked and kept (not quarantined, still indexed), and the exit status says the store
 * was not fully checked; a corrupt file is still found and quarantined beside it.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { encodeNix32, formatNixHash, narFileName, sha256Hash, type Compression } from '../../src/protocol/index.js'
import { Store } from '../../src/store/index.js'
import { BIN, ROOT } from '../helpers/narthex.js'
import { writeNar } from '../helpers/nar-writer.js'

/** Where `cmd` is on PATH, or undefined. */
function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir && existsSync(join(dir, cmd))) return join(dir, cmd)
  return undefined
}

const ENCODERS: Partial<Record<Compression, string[]>> = { xz: ['xz', '-c'], lzip: ['lzip', '-c'] }
const missing = ['xz', 'lzip'].filter((c) => !which(c))
const skip = missing.length > 0 ? `needs ${missing.join(' and ')} to make the test's NARs` : undefined
if (skip && process.env.CI === 'true') throw new Error(`CI: ${skip}`)

const dir = mkdtempSync(join(tmpdir(), 'narthex-verify-store-'))
const dataDir = join(dir, 'data')
const configFile = join(dir, 'narthex.yaml')
// A PATH with the decoders narthex may use, except lzip.
const noLzip = join(dir, 'bin-without-lzip')

after(() => rmSync(dir, { recursive: true, force: true }))

/** Stores a NAR of `contents`, compressed with `compression`; `damage` flips a byte of the stored file. */
async function storeNar(store: Store, compression: Compression, contents: string, damage = false): Promise<string> {
  const nar = writeNar({ type: 'regular', contents })
  const encoder = ENCODERS[compression]
  const file = encoder ? execFileSync(encoder[0]!, encoder.slice(1), { input: nar }) : nar
  const narHash = sha256Hash(createHash('sha256').update(nar).digest())
  const fileHash = sha256Hash(createHash('sha256').update(file).digest())
  const fileName = narFileName(encodeNix32(narHash.digest), compression)
  const stored = Buffer.from(file)
  if (damage) stored[stored.length >> 1]! ^= 0x01
  const temp = store.tempPath(fileName)
  writeFileSync(temp, stored)
  await store.commitNar(temp, fileName, {
    fileHash: formatNixHash(fileHash),
    fileSize: file.length,
    narHash: formatNixHash(narHash),
    narSize: nar.length,
    compression,
    storedAt: Date.now(),
  })
  return fileName
}

/** Runs the CLI with `PATH` set to `path`. */
function narthex(args: string[], path: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, PATH: path }, timeout: 60_000 })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

async function indexed(): Promise<string[]> {
  const { store } = await Store.open(dataDir)
  try {
    const names: string[] = []
    for await (const [name] of store.narFiles()) names.push(name)
    return names.sort()
  } finally {
    await store.close()
  }
}

describe('narthex verify without a decoder', { skip }, () => {
  let lz: string
  let xz: string

  before(async () => {
    writeFileSync(configFile, `dataDir: ${JSON.stringify(dataDir)}\n`)
    mkdirSync(noLzip)
    for (const cmd of ['xz', 'zstd', 'bzip2', 'lz4']) {
      const at = which(cmd)
      if (at) symlinkSync(at, join(noLzip, cmd))
    }
    const { store } = await Store.open(dataDir)
    try {
      lz = await storeNar(store, 'lzip', 'an lzip NAR, intact')
      xz = await storeNar(store, 'xz', 'an xz NAR, intact')
    } finally {
      await store.close()
    }
  })

  test('an lzip NAR is not checked and kept; the exit status and the output say so', async () => {
    const r = await narthex(['verify', '--config', configFile], noLzip)
    assert.equal(r.code, 2, `${r.stdout}${r.stderr}`)
    assert.match(r.stdout, /checked 1 NAR file\(s\).*: 0 corrupt; 1 could not be checked on this machine \(kept\)/)
    assert.match(r.stdout, new RegExp(`${lz}: not checked: COMPRESSION_UNSUPPORTED`))
    assert.equal(existsSync(join(dataDir, 'quarantine')), false, 'nothing quarantined')
    assert.deepEqual(await indexed(), [lz, xz].sort(), 'both files still indexed')

    const json = await narthex(['verify', '--config', configFile, '--json'], noLzip)
    assert.equal(json.code, 2)
    const result = JSON.parse(json.stdout) as { checked: number; corrupt: unknown[]; unchecked: Array<{ fileName: string; code: string }> }
    assert.equal(result.checked, 1)
    assert.deepEqual(result.corrupt, [])
    assert.deepEqual(result.unchecked.map((u) => [u.fileName, u.code]), [[lz, 'COMPRESSION_UNSUPPORTED']])

    // With lzip on PATH, the same file verifies.
    const full = await narthex(['verify', '--config', configFile], process.env.PATH ?? '')
    assert.equal(full.code, 0, full.stdout)
    assert.match(full.stdout, /checked 2 NAR file\(s\).*: 0 corrupt$/m)
  })

  test('beside an unchecked file, a corrupt one is found and quarantined (exit 1)', async () => {
    const { store } = await Store.open(dataDir)
    let bad: string
    try {
      bad = await storeNar(store, 'xz', 'an xz NAR, damaged on disk', true)
    } finally {
      await store.close()
    }
    const r = await narthex(['verify', '--config', configFile], noLzip)
    assert.equal(r.code, 1, r.stdout)
    assert.match(r.stdout, /checked 2 NAR file\(s\).*: 1 corrupt; 1 could not be checked/)
    assert.match(r.stdout, new RegExp(`${bad}: (HASH_MISMATCH|NAR_INVALID): .*\\(quarantined\\)`))
    assert.equal(readdirSync(join(dataDir, 'quarantine')).length, 1)
    assert.deepEqual(await indexed(), [lz, xz].sort())
  })
})
