/**
 * A crash in the middle of an append leaves a torn last line. Opening the log
 * moves it into a side file and the chain goes on from the last complete entry.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditLog, auditLogPath, listTornTails, verifyAuditLog } from '../../src/store/index.js'

async function logWith(n: number) {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-audit-tail-'))
  const log = await AuditLog.open(dir)
  for (let i = 0; i < n; i++) await log.append({ decision: 'admit', storePath: `/nix/store/${'c'.repeat(32)}-p${i}` })
  const path = auditLogPath(dir)
  return { dir, path, text: await readFile(path, 'utf8') }
}

function lastHash(text: string): string {
  return (JSON.parse(text.trim().split('\n').at(-1)!) as { hash: string }).hash
}

const tornTails: Array<[string, (sixth: string) => string, RegExp]> = [
  ['half a line, no newline', (sixth) => sixth.slice(0, 40), /incomplete/],
  ['a whole line without its newline', (sixth) => sixth, /incomplete/],
  ['a last line whose content does not match its hash', (sixth) => `${sixth.replace('"admit"', '"refuse"')}\n`, /does not match its hash/],
  ['a last line that is not JSON', () => '\0\0\0\0\0\0\n', /not a JSON entry/],
]

for (const [what, tear, reason] of tornTails) {
  test(`a torn last line (${what}) is set aside on open and the chain goes on from the last complete entry`, async () => {
    const { dir, path, text: five } = await logWith(5)
    const { text: six } = await logWith(6)
    const sixth = six.trim().split('\n')[5]!
    const torn = tear(sixth)
    await writeFile(path, five + torn)

    const log = await AuditLog.open(dir)
    assert.ok(log.tornTail, 'open reports what it set aside')
    assert.match(log.tornTail.reason, reason)
    assert.equal(log.tornTail.bytes, Buffer.byteLength(torn))
    assert.equal(await readFile(log.tornTail.file, 'utf8'), torn, 'the torn bytes are kept in the side file')
    assert.equal(await readFile(path, 'utf8'), five, 'the log is cut back to its last complete entry')
    assert.deepEqual(await listTornTails(path), [{ file: log.tornTail.file, bytes: Buffer.byteLength(torn) }])

    await log.append({ decision: 'refuse', storePath: '/nix/store/after-the-crash' })
    assert.deepEqual(await verifyAuditLog(path), { ok: true, entries: 6 })
    const appended = JSON.parse((await readFile(path, 'utf8')).trim().split('\n')[5]!) as { seq: number; prev: string }
    assert.equal(appended.seq, 6)
    assert.equal(appended.prev, lastHash(five))
  })
}

test('a log that is nothing but a torn first line is emptied and starts again at entry 1', async () => {
  const { dir, path, text } = await logWith(1)
  await writeFile(path, text.slice(0, 30))
  const log = await AuditLog.open(dir)
  assert.equal(log.tornTail?.bytes, 30)
  assert.equal(await readFile(path, 'utf8'), '')
  await log.append({ decision: 'admit', storePath: '/nix/store/x' })
  assert.deepEqual(await verifyAuditLog(path), { ok: true, entries: 1 })
})

test('a broken entry before the last is not a torn tail: it stays where it is, for --verify to report', async () => {
  const { dir, path, text } = await logWith(5)
  const lines = text.trim().split('\n')
  lines[2] = lines[2]!.replace('"admit"', '"refuse"')
  const edited = `${lines.join('\n')}\n`
  await writeFile(path, edited)
  const log = await AuditLog.open(dir)
  assert.equal(log.tornTail, undefined)
  assert.equal(await readFile(path, 'utf8'), edited)
  assert.deepEqual((await readdir(dir)).sort(), ['audit.log'])
  const result = await verifyAuditLog(path)
  assert.equal(!result.ok && result.line, 3)
})

test('an intact log is left alone on open', async () => {
  const { dir, path, text } = await logWith(3)
  const log = await AuditLog.open(dir)
  assert.equal(log.tornTail, undefined)
  assert.equal(await readFile(path, 'utf8'), text)
  assert.deepEqual(await listTornTails(path), [])
})

test('verifying a log not yet reopened after the crash passes and reports the incomplete last line', async () => {
  const { path, text } = await logWith(4)
  const fragment = '{"seq":5,"time":"2026-'
  await writeFile(path, text + fragment)
  const result = await verifyAuditLog(path)
  assert.equal(result.ok, true)
  assert.equal(result.entries, 4)
  assert.deepEqual(result.incompleteTail, { line: 5, bytes: fragment.length })
})
