/**
 * `narthex audit --verify`, with and without `--checkpoint`, as an auditor runs
 * it: the real CLI on real files, checkpoints signed by the log itself.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatPublicKey, formatSecretKey, generateSecretKey, toPublicKey } from '../../src/protocol/index.js'
import { AuditLog, auditCheckpointPath, auditLogPath } from '../../src/store/index.js'
import { runCli as narthex } from '../helpers/narthex.js'

const key = generateSecretKey('narthex-audit-test-1')

/**
 * A data directory with a log of `n` entries, a config and the signing key; an
 * auditor's copy of the checkpoint after each entry in `kept/`, numbered.
 */
async function setUp(n: number) {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cli-audit-'))
  const dataDir = join(dir, 'data')
  const keyFile = join(dir, 'narthex.key')
  const config = join(dir, 'narthex.yaml')
  const kept = join(dir, 'kept')
  await mkdir(kept)
  await mkdir(dataDir)
  await writeFile(keyFile, `${formatSecretKey(key)}\n`, { mode: 0o600 })
  await writeFile(config, `dataDir: "${dataDir}"\nsigningKeyFile: "${keyFile}"\n`)
  const log = await AuditLog.open(dataDir, { signingKey: key, checkpointIntervalMs: 0 })
  for (let i = 1; i <= n; i++) {
    await log.append({ decision: 'admit', storePath: `/nix/store/${'e'.repeat(32)}-p${i}`, narHash: `sha256:${i}` })
    await log.flush()
    await copyFile(auditCheckpointPath(dataDir), join(kept, String(i).padStart(3, '0')))
  }
  const latest = join(kept, String(n).padStart(3, '0'))
  return { dir, dataDir, config, kept, latest, logFile: auditLogPath(dataDir) }
}

/** Rewrites entry `seq` with `change` and recomputes every hash after it, as a careful attacker would. */
async function rewrite(logFile: string, seq: number, change: (e: Record<string, unknown>) => void) {
  const lines = (await readFile(logFile, 'utf8')).trim().split('\n')
  let prev: string | undefined
  const out = lines.map((line, i) => {
    const { hash, ...body } = JSON.parse(line) as Record<string, unknown>
    if (i + 1 < seq) {
      prev = hash as string
      return line
    }
    if (i + 1 === seq) change(body)
    if (prev !== undefined) body.prev = prev
    prev = createHash('sha256').update(JSON.stringify(body)).digest('hex')
    return JSON.stringify({ ...body, hash: prev })
  })
  await writeFile(logFile, `${out.join('\n')}\n`)
}

test('an untouched log passes against its checkpoint, a directory of kept checkpoints, and an explicit public key', async () => {
  const { config, kept, latest } = await setUp(5)
  const one = await narthex(['audit', '--verify', '--checkpoint', latest, '--config', config])
  assert.equal(one.code, 0, one.stdout + one.stderr)
  assert.match(one.stdout, /5 entries, chain intact/)
  assert.match(one.stdout, /\(5 entries, signed by narthex-audit-test-1 at [^)]+\): the log holds exactly these entries/)
  const all = await narthex(['audit', '--verify', '--checkpoint', kept, '--config', config])
  assert.equal(all.code, 0, all.stdout + all.stderr)
  assert.equal(all.stdout.match(/the log holds exactly these entries/g)?.length, 5)
  const pub = await narthex(['audit', '--verify', '--checkpoint', latest, '--public-key', formatPublicKey(toPublicKey(key)), '--config', config])
  assert.equal(pub.code, 0, pub.stdout + pub.stderr)
})

test('a log cut short by one entry fails against the checkpoint, naming both counts', async () => {
  const { config, latest, logFile } = await setUp(5)
  const lines = (await readFile(logFile, 'utf8')).trim().split('\n')
  await writeFile(logFile, `${lines.slice(0, 4).join('\n')}\n`)
  const plain = await narthex(['audit', '--verify', '--config', config])
  assert.equal(plain.code, 0, 'the chain alone cannot see it')
  const r = await narthex(['audit', '--verify', '--checkpoint', latest, '--config', config])
  assert.equal(r.code, 1, r.stdout)
  assert.match(r.stdout, /the log has 4 entries, the checkpoint commits to 5/)
})

test('an edited entry with the chain recomputed after it passes plain --verify, and fails --checkpoint naming the entry', async () => {
  const { config, kept, latest, logFile } = await setUp(5)
  await rewrite(logFile, 3, (e) => (e.decision = 'refuse'))
  const plain = await narthex(['audit', '--verify', '--config', config])
  assert.equal(plain.code, 0, 'the recomputed chain is consistent in itself')
  const one = await narthex(['audit', '--verify', '--checkpoint', latest, '--config', config])
  assert.equal(one.code, 1, one.stdout)
  assert.match(one.stdout, /entry 5 has hash [0-9a-f]{64}, the checkpoint commits to [0-9a-f]{64}: the log was rewritten at or before entry 5/)
  const all = await narthex(['audit', '--verify', '--checkpoint', kept, '--config', config])
  assert.equal(all.code, 1, all.stdout)
  assert.doesNotMatch(one.stdout, /first entry that differs/, 'one checkpoint cannot narrow it down')
  assert.match(all.stdout, /entry 3 is the first entry that differs/)
  await rm(join(kept, '003'))
  await rm(join(kept, '004'))
  const gaps = await narthex(['audit', '--verify', '--checkpoint', kept, '--config', config])
  assert.match(gaps.stdout, /the first entry that differs is one of entries 3 to 5 \(the checkpoint of entry 2 still matches\)/)
  assert.equal(all.stdout.match(/the log holds exactly these entries/g)?.length, 2, 'the checkpoints of entries 1 and 2 still match')
})

test('an edited entry whose chain was not recomputed fails naming the first broken link', async () => {
  const { config, latest, logFile } = await setUp(5)
  const lines = (await readFile(logFile, 'utf8')).trim().split('\n')
  lines[1] = lines[1]!.replace('"admit"', '"refuse"')
  await writeFile(logFile, `${lines.join('\n')}\n`)
  const r = await narthex(['audit', '--verify', '--checkpoint', latest, '--config', config])
  assert.equal(r.code, 1)
  assert.match(r.stdout, /BROKEN at line 2 \(entry 2\)/)
  assert.doesNotMatch(r.stdout, /first entry that differs/, 'the broken link already names it')
  assert.match(r.stdout, /the chain breaks at entry 2 \(line 2\), within the 5 entries the checkpoint commits to/)
})

test('a checkpoint with a bad signature, or checked against another key, fails', async () => {
  const { config, latest } = await setUp(3)
  const text = await readFile(latest, 'utf8')
  const forged = join(latest, '..', 'forged')
  await writeFile(forged, text.replace(/\n3\n/, '\n2\n'))
  const bad = await narthex(['audit', '--verify', '--checkpoint', forged, '--config', config])
  assert.equal(bad.code, 1, bad.stdout)
  assert.match(bad.stdout, /FAILED: the checkpoint's signature does not verify/)
  const other = formatPublicKey(toPublicKey(generateSecretKey(key.name)))
  const wrongKey = await narthex(['audit', '--verify', '--checkpoint', latest, '--public-key', other, '--config', config])
  assert.equal(wrongKey.code, 1, wrongKey.stdout)
  assert.match(wrongKey.stdout, /signature does not verify/)
  const huge = join(latest, '..', 'huge')
  await writeFile(huge, 'x'.repeat(100_000))
  const tooLarge = await narthex(['audit', '--verify', '--checkpoint', huge, '--config', config])
  assert.equal(tooLarge.code, 1)
  assert.match(tooLarge.stdout, /huge: FAILED: larger than 65536 bytes/)
})

test('bad usage of --checkpoint exits 2', async () => {
  const { dir, config, latest } = await setUp(1)
  const cases: Array<[string, string[], RegExp]> = [
    ['without --verify', ['--checkpoint', latest], /--checkpoint needs --verify/],
    ['a missing file', ['--verify', '--checkpoint', join(dir, 'nope')], /no such file, directory or URL/],
    ['a bad public key', ['--verify', '--checkpoint', latest, '--public-key', 'not-a-key'], /--public-key/],
  ]
  for (const [why, args, message] of cases) {
    const r = await narthex(['audit', ...args, '--config', config])
    assert.equal(r.code, 2, why)
    assert.match(r.stderr, message, why)
  }
})
