/**
 * The deny lists applied to stored narinfo records: which records a denial
 * drops (by path, by key name, by key bytes under another name, a quorum left
 * short), and the start-up walk over a real store, which drops them, audits
 * each one and keeps the first-seen NarHash.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import pino from 'pino'
import { applyDenyToStore, Cache, deniedSigners, Metrics, storedDenial } from '../../src/cache/index.js'
import { compilePolicy, type PolicyInput } from '../../src/policy/index.js'
import { formatNarInfo, formatNixHash, formatPublicKey, generateSecretKey, signNarInfo, toPublicKey, type NarInfo } from '../../src/protocol/index.js'
import { AuditLog, auditLogPath, Store, type NarInfoRecord } from '../../src/store/index.js'
import { fakePath } from '../helpers/fake-cache.js'

const a = generateSecretKey('a-1')
const b = generateSecretKey('b-1')
const pubA = formatPublicKey(toPublicKey(a))
const pubB = formatPublicKey(toPublicKey(b))

function policy(deny: PolicyInput['deny'], minSignatures = 1) {
  return compilePolicy({
    upstreams: [
      { name: 'up-a', publicKeys: [pubA] },
      { name: 'up-b', publicKeys: [pubB] },
    ],
    rules: [{ match: ['*'], upstreams: ['up-a', 'up-b'], minSignatures }],
    deny,
  })
}

function recordOf(info: NarInfo, signers: string[]): NarInfoRecord {
  return { narinfo: formatNarInfo(info), sources: [], rule: 0, signers, admittedAt: 0, origin: 'up-a' }
}

const one = fakePath('one', 'one', a)
const both = signNarInfo(fakePath('both', 'both', a).info, b)

test('a record is dropped when its path is denied, or when it was admitted only on a denied key', () => {
  assert.equal(storedDenial(policy(undefined), one.hashPart, recordOf(one.info, ['a-1'])), undefined)
  assert.match(storedDenial(policy({ paths: [one.storePath] }), one.hashPart, recordOf(one.info, ['a-1'])) ?? '', /deny\.paths/)
  assert.match(storedDenial(policy({ keys: ['a-1'] }), one.hashPart, recordOf(one.info, ['a-1'])) ?? '', /a-1.*deny\.keys; 0 of 1/)
  // The record keeps key names; a full public key on deny.keys is matched by the signature's bytes, under any name.
  assert.deepEqual(deniedSigners(policy({ keys: [pubA] }), one.info), ['a-1'])
  const relabelled = signNarInfo({ ...one.info, sigs: [] }, { ...a, name: 'other-1' })
  assert.deepEqual(deniedSigners(policy({ keys: [pubA] }), relabelled), ['other-1'])
  assert.deepEqual(deniedSigners(policy({ keys: [pubA] }), signNarInfo({ ...one.info, sigs: [] }, generateSecretKey('other-1'))), [], 'other bytes')
  assert.match(storedDenial(policy({ keys: [pubA] }), one.hashPart, recordOf(one.info, ['a-1'])) ?? '', /a-1/)
})

test('a record that still has enough signatures without the denied key is kept; a quorum left short is dropped', () => {
  const rec = recordOf(both, ['a-1', 'b-1'])
  assert.equal(storedDenial(policy({ keys: [pubA] }), one.hashPart, rec), undefined)
  assert.match(storedDenial(policy({ keys: [pubA] }, 2), one.hashPart, rec) ?? '', /1 of 2 required/)
})

test('the start-up walk drops the denied records once, audits each, and keeps their first-seen NarHash', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-deny-'))
  const { store } = await Store.open(dir)
  const audit = await AuditLog.open(dir)
  const kept = fakePath('kept', 'kept', b)
  try {
    for (const [p, signers] of [[one, ['a-1']], [kept, ['b-1']]] as const) {
      await store.putNarInfo(p.hashPart, p.fileName, formatNixHash(p.info.narHash), recordOf(p.info, [...signers]))
    }
    const dropped: string[] = []
    const deps = { store, policy: policy({ keys: [pubA] }), audit, log: pino({ level: 'silent' }), onDropped: (h: string) => dropped.push(h) }
    const sweep = await applyDenyToStore(deps)
    assert.deepEqual(sweep, { checked: 2, dropped: [one.hashPart] })
    assert.deepEqual(dropped, [one.hashPart])
    assert.equal(await store.getNarInfo(one.hashPart), undefined)
    assert.ok(await store.getNarInfo(kept.hashPart))
    assert.equal(await store.getFirstNarHash(one.hashPart), formatNixHash(one.info.narHash), 'the pin stays')
    assert.deepEqual(await store.narInfosForFile(one.fileName), [], 'the NAR file is no longer named by the dropped record')
    assert.deepEqual(await applyDenyToStore(deps), { checked: 1, dropped: [] }, 'a second walk finds nothing more')
    await audit.flush()
    const entries = (await readFile(auditLogPath(dir), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(entries.map((e) => [e.decision, e.storePath, e.reason]), [['deny-applied', one.storePath, 'DENIED_KEY']])

    const released = await store.dropNarInfo(kept.hashPart, { releasePin: true })
    assert.equal(released.firstNarHash, formatNixHash(kept.info.narHash))
    assert.equal(await store.getFirstNarHash(kept.hashPart), undefined)
    assert.deepEqual(await store.dropNarInfo(kept.hashPart, { releasePin: true }), {})
  } finally {
    await store.close()
  }
})

test('the resolver never serves a stored record the deny lists deny, even before the walk reached it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-deny-'))
  const { store } = await Store.open(dir)
  const audit = await AuditLog.open(dir)
  // No walk runs here: only the check on the serving path stands between the record and a client.
  const cache = new Cache({
    store,
    upstreams: [],
    policy: policy({ keys: [pubA] }),
    signingKeys: [generateSecretKey('narthex-test')],
    log: pino({ level: 'silent' }),
    metrics: new Metrics(),
    audit,
    settings: { negativeTtlMs: 0, unavailableTtlMs: 0, narinfoLruEntries: 10, prefetchReferences: false, prefetchNars: false, prefetchMaxInFlight: 1 },
  })
  try {
    await store.putNarInfo(one.hashPart, one.fileName, formatNixHash(one.info.narHash), recordOf(one.info, ['a-1']))
    const answer = await cache.getNarInfo(one.hashPart)
    assert.notEqual(answer.kind, 'found', 'a record admitted only on a denied key was served')
    assert.equal(await store.getNarInfo(one.hashPart), undefined)
    await audit.flush()
    const entries = (await readFile(auditLogPath(dir), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(entries.map((e) => e.decision), ['deny-applied'])
  } finally {
    await cache.close()
    await store.close()
  }
})
