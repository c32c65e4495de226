/**
 * Signed checkpoints of narthex's audit log, laid out as a C2SP signed note
 * (https://c2sp.org/signed-note) in the spirit of a transparency-log checkpoint
 * (https://c2sp.org/tlog-checkpoint):
 *
 * ```
 * narthex-audit <key name>
 * <entry count>
 * <hash of entry <count>, hex>
 * <time, ISO 8601>
 *
 * — <key name> <base64(key ID ‖ ed25519 signature)>
 * ```
 *
 * The signature covers the four body lines including the last newline. As in
 * signed notes, the key ID is the first 4 bytes of
 * SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key), 0x01 naming ed25519; a
 * verifier holding several keys picks the right one without trying them all.
 * An auditor who keeps checkpoints can later prove that the log still holds
 * exactly the entries each one committed to.
 */
import { createHash } from 'node:crypto'
import { NarthexError } from '../errors.js'
import { isKeyName, parseSignature, signFingerprint, verifyFingerprint, type PublicKey, type SecretKey } from './signature.js'

/** What a checkpoint commits to. */
export interface Checkpoint {
  /** The name of the key that signed it (the origin line is `narthex-audit <keyName>`). */
  readonly keyName: string
  /** How many entries the log had. */
  readonly count: number
  /** The hash of entry number `count` (64 zeros for an empty log). */
  readonly head: string
  /** When it was signed, ISO 8601. */
  readonly time: string
}

/** A signature line of a note. */
export interface NoteSignature {
  readonly keyName: string
  /** 4 bytes. */
  readonly keyId: Uint8Array
  /** 64 bytes. */
  readonly sig: Uint8Array
}

/** A parsed, not yet verified, checkpoint note. */
export interface CheckpointNote {
  readonly checkpoint: Checkpoint
  /** The signed text: the body lines with their newlines. */
  readonly body: string
  readonly signatures: readonly NoteSignature[]
}

/** The upper bound on a checkpoint note's size, for readers of untrusted input. */
export const MAX_CHECKPOINT_BYTES = 64 * 1024

const ORIGIN_PREFIX = 'narthex-audit '
const EM_DASH = '\u2014'
const COUNT = /^(0|[1-9][0-9]{0,15})$/
const HEAD = /^[0-9a-f]{64}$/
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/
const SIG_LINE = /^\u2014 (\S+) ([A-Za-z0-9+/]+={0,2})$/

/** The 4-byte signed-note key ID of an ed25519 key. */
export function noteKeyId(keyName: string, publicKey: Uint8Array): Uint8Array {
  const digest = createHash('sha256').update(`${keyName}\n`).update(Buffer.from([0x01])).update(publicKey).digest()
  return new Uint8Array(digest.subarray(0, 4))
}

/**
 * The signed body of a checkpoint.
 * @throws NarthexError SIGNATURE_INVALID when a field cannot be written in the format.
 */
export function formatCheckpointBody(cp: Checkpoint): string {
  if (!isKeyName(cp.keyName) || !Number.isSafeInteger(cp.count) || cp.count < 0 || !HEAD.test(cp.head) || !TIME.test(cp.time)) {
    throw new NarthexError('SIGNATURE_INVALID', 'a checkpoint needs a key name, a count, a 64-hex-digit head hash and an ISO time')
  }
  return `${ORIGIN_PREFIX}${cp.keyName}\n${cp.count}\n${cp.head}\n${cp.time}\n`
}

/**
 * Signs a checkpoint of `count` entries ending at `head` with `key`; returns the note text.
 * @throws NarthexError SIGNATURE_INVALID on a malformed field, KEY_INVALID on a bad key.
 */
export function signCheckpoint(state: { count: number; head: string; time: string }, key: SecretKey): string {
  const body = formatCheckpointBody({ keyName: key.name, ...state })
  const { sig } = parseSignature(signFingerprint(body, key))
  const blob = Buffer.concat([noteKeyId(key.name, key.publicKey), sig])
  return `${body}\n${EM_DASH} ${key.name} ${blob.toString('base64')}\n`
}

function invalid(message: string, line?: number): NarthexError {
  return new NarthexError('SIGNATURE_INVALID', `not a narthex audit checkpoint: ${message}`, line === undefined ? undefined : { detail: { line } })
}

/**
 * Parses a checkpoint note without checking its signatures.
 * @throws NarthexError SIGNATURE_INVALID naming the line that is wrong.
 */
export function parseCheckpoint(text: string): CheckpointNote {
  if (text.length > MAX_CHECKPOINT_BYTES) throw invalid(`larger than ${MAX_CHECKPOINT_BYTES} bytes`)
  if (!text.endsWith('\n')) throw invalid('it does not end with a newline')
  const split = text.indexOf('\n\n')
  if (split < 0) throw invalid('no blank line between the body and the signatures')
  const body = text.slice(0, split + 1)
  const lines = body.slice(0, -1).split('\n')
  if (lines.length !== 4) throw invalid(`the body has ${lines.length} lines, not 4`)
  const [origin, count, head, time] = lines as [string, string, string, string]
  const keyName = origin.startsWith(ORIGIN_PREFIX) ? origin.slice(ORIGIN_PREFIX.length) : ''
  if (!isKeyName(keyName)) throw invalid('line 1 is not "narthex-audit <key name>"', 1)
  if (!COUNT.test(count) || !Number.isSafeInteger(Number(count))) throw invalid('line 2 is not an entry count', 2)
  if (!HEAD.test(head)) throw invalid('line 3 is not a 64-hex-digit hash', 3)
  if (!TIME.test(time) || Number.isNaN(Date.parse(time))) throw invalid('line 4 is not an ISO 8601 time', 4)
  const sigLines = text.slice(split + 2, -1).split('\n')
  const signatures: NoteSignature[] = []
  sigLines.forEach((line, i) => {
    const m = SIG_LINE.exec(line)
    const blob = m ? Buffer.from(m[2]!, 'base64') : undefined
    if (!m || !blob || blob.length !== 68 || blob.toString('base64') !== m[2]) {
      throw invalid(`line ${6 + i} is not "${EM_DASH} <key name> <base64 signature>"`, 6 + i)
    }
    signatures.push({ keyName: m[1]!, keyId: new Uint8Array(blob.subarray(0, 4)), sig: new Uint8Array(blob.subarray(4)) })
  })
  if (signatures.length === 0) throw invalid('it carries no signature')
  return { checkpoint: { keyName, count: Number(count), head, time }, body, signatures }
}

/**
 * Parses a checkpoint and checks that the key its origin names signed it.
 * Signatures by other keys are ignored, as signed notes allow.
 * @returns the checkpoint.
 * @throws NarthexError SIGNATURE_INVALID when it is malformed, `keys` hold no key
 *   of its origin's name, or that key's signature does not verify.
 */
export function verifyCheckpoint(text: string, keys: readonly PublicKey[]): Checkpoint {
  const note = parseCheckpoint(text)
  const { keyName } = note.checkpoint
  const candidates = keys.filter((k) => k.name === keyName)
  if (candidates.length === 0) throw new NarthexError('SIGNATURE_INVALID', `the checkpoint is signed as ${JSON.stringify(keyName)}, and no such public key was given`)
  const ok = note.signatures.some(
    (s) =>
      s.keyName === keyName &&
      candidates.some(
        (k) => Buffer.from(noteKeyId(k.name, k.key)).equals(s.keyId) && verifyFingerprint(note.body, `${keyName}:${Buffer.from(s.sig).toString('base64')}`, [k]),
      ),
  )
  if (!ok) throw new NarthexError('SIGNATURE_INVALID', `the checkpoint's signature does not verify under the public key ${JSON.stringify(keyName)}`)
  return note.checkpoint
}
