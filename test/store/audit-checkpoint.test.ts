/**
 * The audit log signs checkpoints of its head into `<dataDir>/audit.checkpoint`:
 * after synced appends, rate-limited, and on flush.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateSecretKey, toPublicKey, verifyCheckpoint } from '../../src/protocol/index.js'
import { AuditLog, auditCheckpointPath, auditLogPath, compareWithCheckpoint, verifyAuditLog } from '../../src/store/index.js'

const key = generateSecretKey('narthex-test-1')
const event = (i: number) => ({ decision: 'admit', storePath: `/nix/store/${'d'.repeat(32)}-p${i}` })

async function readCheckpoint(dir: string) {
  return verifyCheckpoint(await readFile(auditCheckpointPath(dir), 'utf8'), [toPublicKey(key)])
}

function lastHash(text: string): string {
  return (JSON.parse(text.trim().split('\n').at(-1)!) as { hash: string }).hash
}

test('after appends the checkpoint commits to the entry count and the last entry\'s hash, signed by narthex\'s key', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cp-'))
  const log = await AuditLog.open(dir, { signingKey: key, checkpointIntervalMs: 0 })
  assert.equal(log.checkpoint, undefined, 'an empty log has no checkpoint yet')
  for (let i = 0; i < 3; i++) await log.append(event(i))
  await log.flush()
  const cp = await readCheckpoint(dir)
  assert.equal(cp.count, 3)
  assert.equal(cp.head, lastHash(await readFile(auditLogPath(dir), 'utf8')))
  assert.equal(cp.keyName, key.name)
  assert.equal(log.checkpoint, await readFile(auditCheckpointPath(dir), 'utf8'), 'the one served is the one on disk')
  assert.deepEqual((await readdir(dir)).sort(), ['audit.checkpoint', 'audit.log'], 'no temporary file is left behind')
})

test('checkpoints are rate-limited, and flush (on shutdown) signs the last head', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cp-'))
  const log = await AuditLog.open(dir, { signingKey: key, checkpointIntervalMs: 60_000 })
  await log.append(event(0))
  await new Promise((r) => setTimeout(r, 50))
  assert.equal((await readCheckpoint(dir)).count, 1, 'the first batch is signed at once')
  for (let i = 1; i < 5; i++) await log.append(event(i))
  await new Promise((r) => setTimeout(r, 50))
  assert.equal((await readCheckpoint(dir)).count, 1, 'within the interval, no new checkpoint')
  await log.flush()
  assert.equal((await readCheckpoint(dir)).count, 5)
})

test('opening a log that has entries but no current checkpoint signs one; a current one is kept as it is', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cp-'))
  const plain = await AuditLog.open(dir)
  for (let i = 0; i < 4; i++) await plain.append(event(i))
  const signed = await AuditLog.open(dir, { signingKey: key })
  const first = await readFile(auditCheckpointPath(dir), 'utf8')
  assert.equal((await readCheckpoint(dir)).count, 4)
  assert.equal(signed.checkpoint, first)
  await new Promise((r) => setTimeout(r, 5))
  await AuditLog.open(dir, { signingKey: key })
  assert.equal(await readFile(auditCheckpointPath(dir), 'utf8'), first, 'not re-signed: it already commits to this head')
})

test('after a torn tail is set aside, the checkpoint commits to the last complete entry', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cp-'))
  const plain = await AuditLog.open(dir)
  for (let i = 0; i < 3; i++) await plain.append(event(i))
  const complete = await readFile(auditLogPath(dir), 'utf8')
  await writeFile(auditLogPath(dir), `${complete}{"seq":4,"ti`)
  const log = await AuditLog.open(dir, { signingKey: key })
  assert.ok(log.tornTail)
  const cp = await readCheckpoint(dir)
  assert.equal(cp.count, 3)
  assert.equal(cp.head, lastHash(complete))
})

test('comparing the log with a checkpoint: a match, a shorter log, a rewritten one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-cp-'))
  const log = await AuditLog.open(dir, { signingKey: key, checkpointIntervalMs: 0 })
  for (let i = 0; i < 4; i++) await log.append(event(i))
  await log.flush()
  const cp = await readCheckpoint(dir)
  const facts = await verifyAuditLog(auditLogPath(dir), { hashesAt: [cp.count] })
  assert.deepEqual(compareWithCheckpoint({ entries: facts.entries, heads: facts.heads! }, cp), { ok: true, checkpoint: cp })
  const shorter = compareWithCheckpoint({ entries: 3, heads: new Map() }, cp)
  assert.equal(shorter.ok, false)
  assert.match(!shorter.ok ? shorter.problem : '', /the log has 3 entries, the checkpoint commits to 4/)
  const rewritten = compareWithCheckpoint({ entries: 4, heads: new Map([[4, 'ee'.repeat(32)]]) }, cp)
  assert.equal(!rewritten.ok && rewritten.seq, 4)
  const broken = compareWithCheckpoint({ entries: 1, heads: new Map(), broken: { seq: 2, line: 2, problem: 'edited' } }, cp)
  assert.equal(!broken.ok && broken.seq, 2, 'the first broken link is named')
})
