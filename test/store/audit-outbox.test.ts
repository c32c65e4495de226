/**
 * The audit outbox: an admission written to the index carries its audit event
 * in the same synced batch, and the replay at start appends what a crash kept
 * from the log, exactly once. Real LevelDB, real log files, and the real
 * `narthex audit --verify` on the result.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditLog, auditLogPath, appendFromOutbox, replayAuditOutbox, Store, withAuditId, type AuditEntry, type NarInfoRecord } from '../../src/store/index.js'
import { runCli } from '../helpers/narthex.js'

const FILE = `${'1'.repeat(52)}.nar.xz`
const record: NarInfoRecord = { narinfo: 'StorePath: x\n', sources: [], rule: 0, signers: ['k'], admittedAt: 1, origin: 'up' }

function admitEvent(i: number) {
  return withAuditId({ decision: 'admit', storePath: `/nix/store/${'a'.repeat(31)}${i % 10}-p${i}`, narHash: `sha256:${'0'.repeat(52)}`, upstreams: ['up'], signers: ['k'], rule: 0 })
}

async function entries(dataDir: string): Promise<AuditEntry[]> {
  const text = await readFile(auditLogPath(dataDir), 'utf8').catch(() => '')
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditEntry)
}

async function outbox(store: Store): Promise<string[]> {
  const ids: string[] = []
  for await (const e of store.auditOutbox()) ids.push(e.id!)
  return ids
}

async function verifyWithCli(dataDir: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const config = join(dataDir, '..', 'narthex.yaml')
  await writeFile(config, `dataDir: "${dataDir}"\nsigningKeyFile: "${join(dataDir, '..', 'narthex.key')}"\n`)
  return runCli(['audit', '--verify', '--config', config])
}

async function fresh(): Promise<string> {
  return join(await mkdtemp(join(tmpdir(), 'narthex-outbox-')), 'data')
}

test('an admission whose audit append a crash prevented gets exactly one entry at the next start', async () => {
  const dataDir = await fresh()
  let { store } = await Store.open(dataDir)
  let audit = await AuditLog.open(dataDir)
  const first = admitEvent(0)
  await store.putNarInfo('a'.repeat(32), FILE, first.narHash!, record, first)
  await appendFromOutbox(store, audit, first)
  const crashed = admitEvent(1)
  await store.putNarInfo('b'.repeat(32), FILE, crashed.narHash!, record, crashed)
  // The crash: the index batch is durable, the append never happened.
  await store.close()
  ;({ store } = await Store.open(dataDir))
  audit = await AuditLog.open(dataDir)
  assert.deepEqual(await outbox(store), [crashed.id], 'only the event whose append was skipped waits in the outbox')
  assert.deepEqual(await replayAuditOutbox(store, audit), { appended: 1, alreadyLogged: 0 })
  const log = await entries(dataDir)
  assert.deepEqual(log.map((e) => [e.seq, e.decision, e.storePath, e.id]), [
    [1, 'admit', first.storePath, first.id],
    [2, 'admit', crashed.storePath, crashed.id],
  ])
  assert.deepEqual(await outbox(store), [], 'the replay empties the outbox')
  assert.deepEqual(await replayAuditOutbox(store, audit), { appended: 0, alreadyLogged: 0 }, 'a second start appends nothing')
  await store.close()
  const cli = await verifyWithCli(dataDir)
  assert.equal(cli.code, 0, cli.stdout + cli.stderr)
})

test('a crash after the append but before the outbox removal appends nothing again', async () => {
  const dataDir = await fresh()
  let { store } = await Store.open(dataDir)
  let audit = await AuditLog.open(dataDir)
  const e = admitEvent(2)
  await store.putNarInfo('c'.repeat(32), FILE, e.narHash!, record, e)
  // The crash: the entry is durable in the log, the outbox removal never happened.
  await audit.append(e)
  await store.close()
  ;({ store } = await Store.open(dataDir))
  audit = await AuditLog.open(dataDir)
  assert.deepEqual(await outbox(store), [e.id])
  assert.deepEqual(await replayAuditOutbox(store, audit), { appended: 0, alreadyLogged: 1 })
  assert.deepEqual((await entries(dataDir)).map((x) => x.id), [e.id], 'no duplicate entry')
  assert.deepEqual(await outbox(store), [])
  await store.close()
  const cli = await verifyWithCli(dataDir)
  assert.equal(cli.code, 0, cli.stdout + cli.stderr)
})

test('an entry further back than the tail the replay reads first is still recognised', async () => {
  const dataDir = await fresh()
  let { store } = await Store.open(dataDir)
  const audit = await AuditLog.open(dataDir)
  const e = admitEvent(3)
  await store.putNarInfo('d'.repeat(32), FILE, e.narHash!, record, e)
  await audit.append(e)
  // More than a megabyte of later entries (one group commit), so the first entry is out of the tail.
  await Promise.all(Array.from({ length: 8000 }, (_, i) => audit.append({ decision: 'refuse', storePath: `/nix/store/${'f'.repeat(32)}-q${i}`, reason: 'NO_SIGNATURE' })))
  await store.close()
  ;({ store } = await Store.open(dataDir))
  const reopened = await AuditLog.open(dataDir)
  assert.deepEqual(await replayAuditOutbox(store, reopened), { appended: 0, alreadyLogged: 1 })
  assert.equal((await entries(dataDir)).length, 8001)
  await store.close()
})

test('events in the outbox are replayed oldest first, in one chain that verifies', async () => {
  const dataDir = await fresh()
  let { store } = await Store.open(dataDir)
  const events = Array.from({ length: 5 }, (_, i) => admitEvent(10 + i))
  for (const [i, e] of events.entries()) await store.putNarInfo(String(i).repeat(32), FILE, e.narHash!, record, e)
  await store.close()
  ;({ store } = await Store.open(dataDir))
  const audit = await AuditLog.open(dataDir)
  assert.deepEqual(await replayAuditOutbox(store, audit), { appended: 5, alreadyLogged: 0 })
  assert.deepEqual((await entries(dataDir)).map((x) => x.id), events.map((e) => e.id))
  await store.close()
  const cli = await verifyWithCli(dataDir)
  assert.equal(cli.code, 0, cli.stdout + cli.stderr)
})

test('putNarInfo refuses an outbox event without an id, and writes nothing', async () => {
  const dataDir = await fresh()
  const { store } = await Store.open(dataDir)
  await assert.rejects(store.putNarInfo('e'.repeat(32), FILE, 'sha256:x', record, { decision: 'admit', storePath: '/nix/store/x' }), /needs an id/)
  assert.equal(await store.getNarInfo('e'.repeat(32)), undefined)
  await store.close()
})
