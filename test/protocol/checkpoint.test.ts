/**
 * Audit checkpoints as signed notes: the layout, the signature and the key ID
 * follow C2SP signed-note, checked against the reference implementation's own
 * vector (golang.org/x/mod/sumdb/note, note_test.go: the PeterNeumann key and note).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isNarthexError } from '../../src/errors.js'
import {
  generateSecretKey,
  noteKeyId,
  parseCheckpoint,
  parseSecretKey,
  signCheckpoint,
  signFingerprint,
  toPublicKey,
  verifyCheckpoint,
} from '../../src/protocol/index.js'

const GO_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'
const GO_SKEY = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz'
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
const GO_SIG = 'x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM='

test('the key ID and the signature match the signed-note reference vector byte for byte', () => {
  const pub = Buffer.from(GO_VKEY.split('+').slice(2).join('+'), 'base64').subarray(1)
  const seed = Buffer.from(GO_SKEY.split('+').slice(4).join('+'), 'base64').subarray(1)
  assert.equal(Buffer.from(noteKeyId('PeterNeumann', pub)).toString('hex'), 'c74f20a3')
  const key = parseSecretKey(`PeterNeumann:${Buffer.concat([seed, pub]).toString('base64')}`)
  const sig = Buffer.from(signFingerprint(GO_TEXT, key).split(':')[1]!, 'base64')
  assert.equal(Buffer.concat([noteKeyId('PeterNeumann', pub), sig]).toString('base64'), GO_SIG)
})

const key = generateSecretKey('narthex.example.org-1')
const head = 'ab'.repeat(32)
const time = '2026-12-01T09:00:00.000Z'

test('a signed checkpoint has the documented layout and verifies under its key', () => {
  const text = signCheckpoint({ count: 42, head, time }, key)
  const lines = text.split('\n')
  assert.deepEqual(lines.slice(0, 5), ['narthex-audit narthex.example.org-1', '42', head, time, ''])
  assert.match(lines[5]!, /^\u2014 narthex\.example\.org-1 [A-Za-z0-9+/]{91}=$/)
  assert.equal(lines[6], '')
  assert.deepEqual(verifyCheckpoint(text, [toPublicKey(key)]), { keyName: key.name, count: 42, head, time })
})

test('a checkpoint whose body or signature was changed, or signed by another key, does not verify', () => {
  const text = signCheckpoint({ count: 42, head, time }, key)
  const other = generateSecretKey(key.name)
  const cases: Array<[string, string, ReturnType<typeof toPublicKey>[]]> = [
    ['count changed', text.replace('\n42\n', '\n41\n'), [toPublicKey(key)]],
    ['head changed', text.replace(head, 'cd'.repeat(32)), [toPublicKey(key)]],
    ['signature byte changed', text.replace(/ (\S)(\S+)\n$/, (_, c: string, rest: string) => ` ${c === 'A' ? 'B' : 'A'}${rest}\n`), [toPublicKey(key)]],
    ['same name, another key', signCheckpoint({ count: 42, head, time }, other), [toPublicKey(key)]],
    ['no key of that name', text, [toPublicKey(generateSecretKey('someone-else'))]],
  ]
  for (const [why, note, keys] of cases) {
    assert.throws(() => verifyCheckpoint(note, keys), (err) => isNarthexError(err, 'SIGNATURE_INVALID'), why)
  }
})

test('malformed checkpoints are refused naming the line', () => {
  const good = signCheckpoint({ count: 3, head, time }, key)
  const lines = good.split('\n')
  const cases: Array<[string, string, number | undefined]> = [
    ['no final newline', good.slice(0, -1), undefined],
    ['no blank line', good.replace('\n\n', '\n'), undefined],
    ['wrong origin', good.replace('narthex-audit ', 'other-log '), 1],
    ['count not a number', good.replace('\n3\n', '\nthree\n'), 2],
    ['count with a leading zero', good.replace('\n3\n', '\n03\n'), 2],
    ['short head', good.replace(head, 'ab'), 3],
    ['not a time', good.replace(time, 'yesterday'), 4],
    ['extra body line', good.replace(`${time}\n`, `${time}\nextra\n`), undefined],
    ['signature line without the dash', `${lines.slice(0, 5).join('\n')}\n${lines[5]!.slice(2)}\n`, 6],
    ['no signature', `${lines.slice(0, 4).join('\n')}\n\n`, 6],
  ]
  for (const [why, text, line] of cases) {
    assert.throws(
      () => parseCheckpoint(text),
      (err) => isNarthexError(err, 'SIGNATURE_INVALID') && (line === undefined || err.detail?.line === line),
      why,
    )
  }
})

test('signatures by other keys are ignored: the origin key\'s signature is what counts', () => {
  const witness = generateSecretKey('witness-1')
  const text = signCheckpoint({ count: 7, head, time }, key)
  const { body } = parseCheckpoint(text)
  const sig = Buffer.from(signFingerprint(body, witness).split(':')[1]!, 'base64')
  const cosig = `\u2014 witness-1 ${Buffer.concat([noteKeyId('witness-1', witness.publicKey), sig]).toString('base64')}`
  const cosigned = `${cosig}\n`
  assert.equal(verifyCheckpoint(`${text}${cosigned}`, [toPublicKey(key)]).count, 7)
  assert.equal(parseCheckpoint(`${text}${cosigned}`).signatures.length, 2)
  // Only the witness's signature: the origin's is missing, so it does not verify under narthex's key.
  assert.throws(() => verifyCheckpoint(`${body}\n${cosigned}`, [toPublicKey(key), toPublicKey(witness)]), (err) => isNarthexError(err, 'SIGNATURE_INVALID'))
})
