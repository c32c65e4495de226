/**
 * A running narthex serves its latest audit checkpoint at `GET /audit/checkpoint`,
 * and sets aside a torn last line of its audit log when it starts; an auditor
 * checks the log against the served checkpoint with the CLI.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseCheckpoint } from '../../src/protocol/index.js'
import { AuditLog, auditLogPath } from '../../src/store/index.js'
import { NarthexProcess, runCli as narthex } from '../helpers/narthex.js'

test('a narthex with an empty audit log answers 404 at /audit/checkpoint', async (t) => {
  const running = await NarthexProcess.start({})
  t.after(() => running.cleanup())
  const res = await fetch(`${running.url}/audit/checkpoint`)
  assert.equal(res.status, 404)
  await res.arrayBuffer()
  const r = await narthex(['audit', '--verify', '--checkpoint', `${running.url}/audit/checkpoint`, '--config', running.configFile])
  assert.equal(r.code, 1, 'a checkpoint that cannot be fetched fails the check')
  assert.match(r.stderr, /cannot fetch it \(HTTP 404/)
})

test('narthex sets aside a torn last line on start, serves a checkpoint of the rest, and the CLI verifies the log against it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-e2e-audit-'))
  const dataDir = join(dir, 'data')
  await mkdir(dataDir)
  const before = await AuditLog.open(dataDir)
  for (let i = 0; i < 3; i++) await before.append({ decision: 'admit', storePath: `/nix/store/${'f'.repeat(32)}-p${i}` })
  const complete = await readFile(auditLogPath(dataDir), 'utf8')
  const torn = '{"seq":4,"time":"20'
  await writeFile(auditLogPath(dataDir), complete + torn)

  const running = await NarthexProcess.start({}, { dir })
  t.after(() => running.cleanup())
  const warned = running.logged('set aside the torn last line')
  assert.equal(warned.length, 1)
  assert.equal(warned[0]!.level, 40, 'logged as a warning')
  assert.match(String(warned[0]!.file), /audit\.log\.torn-/)

  const res = await fetch(`${running.url}/audit/checkpoint`)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/)
  const { checkpoint } = parseCheckpoint(await res.text())
  assert.equal(checkpoint.count, 3, 'it commits to the complete entries only')
  assert.equal(checkpoint.keyName, running.publicKey.split(':')[0])

  const url = `${running.url}/audit/checkpoint`
  const auditor = await narthex(['audit', '--verify', '--checkpoint', url, '--public-key', running.publicKey, '--config', running.configFile])
  assert.equal(auditor.code, 0, auditor.stdout + auditor.stderr)
  assert.match(auditor.stdout, /3 entries, chain intact/)
  assert.match(auditor.stdout, /the log holds exactly these entries/)
  assert.match(auditor.stdout, new RegExp(`set aside earlier: \\S+audit\\.log\\.torn-\\S+ \\(${torn.length} bytes`))

  const lines = complete.trim().split('\n')
  await writeFile(auditLogPath(dataDir), `${lines.slice(0, 2).join('\n')}\n`)
  const shortened = await narthex(['audit', '--verify', '--checkpoint', url, '--config', running.configFile])
  assert.equal(shortened.code, 1, shortened.stdout)
  assert.match(shortened.stdout, /the log has 2 entries, the checkpoint commits to 3/)
})
