import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { AuditLog, auditLogPath, verifyAuditLog } from '../../src/store/index.js'

/** The entry with its hash recomputed after `change`, as someone rewriting the log by hand would do. */
function rehash(line: string, change: (e: Record<string, unknown>) => void, prev?: string): string {
  const { hash: _, ...body } = JSON.parse(line) as Record<string, unknown>
  change(body)
  if (prev !== undefined) body.prev = prev
  return JSON.stringify({ ...body, hash: createHash('sha256').update(JSON.stringify(body)).digest('hex') })
}

async function logWith(n: number) {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-audit-'))
  const log = await AuditLog.open(dir)
  for (let i = 0; i < n; i++) {
    await log.append({ decision: i % 2 ? 'refuse' : 'admit', storePath: `/nix/store/${'a'.repeat(32)}-p${i}`, narHash: `sha256:${i}` })
  }
  return { dir, path: auditLogPath(dir) }
}

test('an untouched log verifies, and reopening continues the chain', async () => {
  const { dir, path } = await logWith(5)
  assert.deepEqual(await verifyAuditLog(path), { ok: true, entries: 5 })
  const before = (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { seq: number; hash: string })
  const again = await AuditLog.open(dir)
  await again.append({ decision: 'admit', storePath: '/nix/store/x' })
  assert.deepEqual(await verifyAuditLog(path), { ok: true, entries: 6 })
  const sixth = JSON.parse((await readFile(path, 'utf8')).trim().split('\n')[5]!) as { seq: number; prev: string }
  assert.equal(sixth.seq, 6)
  assert.equal(sixth.prev, before[4]!.hash, 'the new entry links to the last one written before reopening')
})

test('editing, deleting, inserting or reordering an entry is detected at that entry', async () => {
  const cases: Array<[string, (lines: string[]) => string[], number]> = [
    ['edit a field', (l) => l.map((x, i) => (i === 2 ? x.replace('"admit"', '"refuse"') : x)), 3],
    ['edit another field', (l) => l.map((x, i) => (i === 2 ? x.replace('sha256:2', 'sha256:9') : x)), 3],
    // The edited entry's own hash is recomputed, so it checks out: the next entry's link to it is what breaks.
    ['edit the hash too', (l) => l.map((x, i) => (i === 2 ? rehash(x, (e) => (e.decision = 'refuse')) : x)), 4],
    ['delete an entry', (l) => l.filter((_, i) => i !== 1), 2],
    ['delete the first', (l) => l.slice(1), 1],
    ['swap two entries', (l) => [l[0]!, l[2]!, l[1]!, ...l.slice(3)], 2],
    ['insert a copy', (l) => [l[0]!, l[1]!, l[1]!, ...l.slice(2)], 3],
    ['garbage line', (l) => [l[0]!, 'not json', ...l.slice(1)], 2],
  ]
  for (const [why, change, line] of cases) {
    const { path } = await logWith(5)
    const lines = (await readFile(path, 'utf8')).trim().split('\n')
    await writeFile(path, `${change(lines).join('\n')}\n`)
    const result = await verifyAuditLog(path)
    assert.equal(result.ok, false, why)
    assert.equal(!result.ok && result.line, line, why)
  }
})

test('truncating the tail is not detectable by the chain alone: only the count shows it (checkpoints catch it)', async () => {
  const { path } = await logWith(4)
  const lines = (await readFile(path, 'utf8')).trim().split('\n')
  await writeFile(path, `${lines.slice(0, 3).join('\n')}\n`)
  const result = await verifyAuditLog(path)
  assert.equal(result.ok, true, 'the chain of what is left still verifies')
  assert.equal(result.entries, 3, 'the count is one short')
})

test('concurrent appends are written together and keep one valid chain', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-audit-'))
  const log = await AuditLog.open(dir)
  await Promise.all(Array.from({ length: 50 }, (_, i) => log.append({ decision: 'admit', storePath: `/nix/store/${'b'.repeat(32)}-p${i}` })))
  // The first append starts a write at once; the 49 that arrive meanwhile share the next one.
  assert.equal(log.syncs, 2, 'fifty appends, two synced writes')
  assert.deepEqual(await verifyAuditLog(auditLogPath(dir)), { ok: true, entries: 50 })
  const lines = (await readFile(auditLogPath(dir), 'utf8')).trim().split('\n')
  assert.deepEqual(lines.map((l) => (JSON.parse(l) as { seq: number }).seq), Array.from({ length: 50 }, (_, i) => i + 1))
})
