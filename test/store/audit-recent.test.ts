/**
 * The audit log's tail for the status page: newest first, filtered, and read
 * from the last bytes only, so a large log costs one bounded read.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { appendFile, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditLog, auditLogPath, readAuditTail } from '../../src/store/index.js'

test('the latest matching entries, newest first; a missing log has none', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-audit-tail-'))
  assert.deepEqual(await readAuditTail(auditLogPath(dir), () => true), [])
  const log = await AuditLog.open(dir)
  for (let i = 0; i < 30; i++) await log.append({ decision: i % 3 === 0 ? 'refuse' : 'admit', storePath: `/nix/store/p${i}`, reason: 'DENIED' })
  const tail = await readAuditTail(auditLogPath(dir), (e) => e.decision === 'refuse', { limit: 4 })
  assert.deepEqual(tail.map((e) => e.storePath), ['/nix/store/p27', '/nix/store/p24', '/nix/store/p21', '/nix/store/p18'])
})

test('only the last maxBytes are read: an entry cut by the window and a torn line are skipped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-audit-tail-'))
  const log = await AuditLog.open(dir)
  for (let i = 0; i < 200; i++) await log.append({ decision: 'refuse', storePath: `/nix/store/${'x'.repeat(100)}-${i}` })
  await appendFile(auditLogPath(dir), '{"decision":"refuse","storePath":"/nix/store/torn')
  const tail = await readAuditTail(auditLogPath(dir), () => true, { limit: 1000, maxBytes: 2000 })
  assert.ok(tail.length > 0 && tail.length < 15, `${tail.length} entries from 2000 bytes`)
  assert.equal(tail[0].storePath, `/nix/store/${'x'.repeat(100)}-199`)
  const seqs = tail.map((e) => e.seq)
  assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first, each whole')
  assert.ok(tail.every((e) => e.storePath.startsWith('/nix/store/x')))
})
