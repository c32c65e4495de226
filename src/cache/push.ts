/**
 * Pushes from `nix copy --to http://narthex`: NAR files first (`PUT
 * nar/<FileHash>.nar<ext>`), then their narinfo (`PUT <hash>.narinfo`). A NAR
 * waits in `uploads/` until its narinfo arrives; the narinfo is admitted only
 * when it carries enough valid signatures by the configured push keys, does not
 * conflict with what narthex admitted before for that path, and its NAR
 * verifies (FileHash, FileSize, NarHash, NarSize, grammar). Then the NAR moves
 * into the store, the narinfo is indexed, and the push is audited.
 *
 * Nix 2.26 pushes more: realisations of content-addressed outputs (`PUT
 * realisations/<id>.doi`, after their paths), admitted under the same keys and
 * quorum; NAR listings (`PUT <hash>.ls`, with `write-nar-listing=true`, sent
 * first), accepted and dropped, since narthex lists what it verified itself;
 * and build logs (`PUT log/<drv>`, `nix store copy-log`), stored as sent.
 */
import { createWriteStream } from 'node:fs'
import { open, rename, unlink } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import picomatch from 'picomatch'
import type { Logger } from 'pino'
import { NarthexError, isNarthexError } from '../errors.js'
import {
  encodeNix32,
  formatNarInfo,
  formatNixHash,
  formatStorePath,
  HashingPassThrough,
  isHashPart,
  narFileNameOf,
  parseNarFileName,
  parseNarInfo,
  validSignatures,
  signatureKeyName,
  type NarInfo,
  type PublicKey,
  formatRealisation,
  MAX_LISTING_BYTES,
  parseRealisation,
  validRealisationSignatures,
} from '../protocol/index.js'
import type { AuditLog, NarInfoRecord, Store } from '../store/index.js'
import { appendFromOutbox, withAuditId } from '../store/index.js'
import { storeBuildLog } from './build-log.js'
import { verifyNarFile } from './verify-file.js'

/** Push settings (the config's `push` section, keys parsed). */
export interface PushSettings {
  readonly publicKeys: readonly PublicKey[]
  readonly minSignatures: number
  readonly maxNarBytes: number
}

/** The client token a push came with: its name for the audit log, and what it may push. */
export interface Pusher {
  readonly name: string
  /** Store path name globs, store paths or hash parts; any path when undefined. */
  readonly pushMatch?: readonly string[] | undefined
}

/** True when `pushMatch` allows the store path `hashPart`-`name` (globs match the name part, as rules do). */
export function pushAllowed(pushMatch: readonly string[] | undefined, hashPart: string, name: string): boolean {
  if (pushMatch === undefined) return true
  return pushMatch.some((p) => {
    if (p.startsWith('/')) return p === `/nix/store/${hashPart}-${name}`
    if (isHashPart(p)) return p === hashPart
    return picomatch(p, { dot: true })(name)
  })
}

/** What a {@link PushReceiver} needs. */
export interface PushDeps {
  readonly store: Store
  readonly audit: AuditLog
  readonly log: Logger
  readonly settings: PushSettings
  /** Called after a push was admitted, so cached answers for the hash part are dropped. */
  readonly onAdmitted: (hashPart: string) => void
  /**
   * With a bucket (storage.s3): creates the path's narinfo there unless it has
   * one, before the push is kept; resolves to the NarHash the bucket pins.
   */
  readonly pinInBucket?: ((hashPart: string, record: NarInfoRecord) => Promise<string | undefined>) | undefined
}

/** Receives pushed NARs and narinfos. */
export class PushReceiver {
  readonly #d: PushDeps

  constructor(deps: PushDeps) {
    this.#d = deps
  }

  /**
   * Stores an uploaded NAR file under `uploads/` once its bytes hash to the name.
   * @throws NarthexError BAD_REQUEST (name and content differ), PAYLOAD_TOO_LARGE.
   */
  async receiveNar(fileName: string, body: Readable): Promise<void> {
    const { store, settings } = this.#d
    const dest = store.uploadPath(fileName)
    const parsed = parseNarFileName(fileName)!
    const temp = store.tempPath(`upload-${fileName}`)
    const hasher = new HashingPassThrough({}, `pushed NAR ${fileName}`, settings.maxNarBytes)
    try {
      await pipeline(body, hasher, createWriteStream(temp, { flags: 'wx' }))
      if (encodeNix32(hasher.result!.hash.digest) !== parsed.nix32) {
        throw new NarthexError('BAD_REQUEST', `pushed NAR ${fileName} does not hash to its name`)
      }
      const fh = await open(temp, 'r')
      try {
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rename(temp, dest)
    } catch (err) {
      await unlink(temp).catch(() => undefined)
      throw err
    }
  }

  /**
   * Admits a pushed narinfo. `token` is the client token of a push, recorded
   * in the audit log; a path outside its `pushMatch` is refused.
   * @returns `admitted`, or `unchanged` when the same NarHash was admitted before.
   * @throws NarthexError NARINFO_INVALID, BAD_REQUEST (missing or bad NAR),
   *   PUSH_REFUSED (signatures), PUSH_CONFLICT (another NarHash was admitted before).
   */
  async receiveNarInfo(hashPart: string, text: string, origin: 'push' | 'import' = 'push', token?: Pusher): Promise<'admitted' | 'unchanged'> {
    const { store, settings, audit, log } = this.#d
    const info = parseNarInfo(text)
    const storePath = formatStorePath(info.storePath)
    if (info.storePath.hashPart !== hashPart) {
      throw new NarthexError('BAD_REQUEST', `narinfo for ${storePath} pushed as ${hashPart}.narinfo`)
    }
    const sigs = validSignatures(info, settings.publicKeys)
    const signers = [...new Set(sigs.map(signatureKeyName))].sort()
    const narHash = formatNixHash(info.narHash)
    const by = token ? { token: token.name } : {}
    // Log fields named `token` are redacted (they could hold a secret): the name goes as `tokenName`.
    const logBy = token ? { tokenName: token.name } : {}
    const refuse = async (code: 'PUSH_REFUSED' | 'PUSH_CONFLICT' | 'BAD_REQUEST', message: string): Promise<never> => {
      await audit.append({ decision: 'refuse', storePath, narHash, upstreams: [origin], signers, reason: code, message, ...by })
      log.warn({ path: storePath, code, ...logBy }, `${origin} refused: ${message}`)
      throw new NarthexError(code, message)
    }
    if (token && !pushAllowed(token.pushMatch, hashPart, info.storePath.name)) {
      await refuse('PUSH_REFUSED', `token ${token.name} may not push ${storePath} (its pushMatch: ${token.pushMatch!.join(', ')})`)
    }
    if (signers.length < settings.minSignatures) {
      await refuse('PUSH_REFUSED', `${signers.length} of ${settings.minSignatures} required ${origin} signature(s)`)
    }
    const existing = await store.getNarInfo(hashPart)
    const first = existing ? formatNixHash(parseNarInfo(existing.narinfo).narHash) : await store.getFirstNarHash(hashPart)
    if (first !== undefined && first !== narHash) {
      await refuse('PUSH_CONFLICT', `${storePath} was admitted before with ${first}; refusing ${narHash}`)
    }
    if (existing) return 'unchanged'

    const narFile = narFileNameOf(info)
    const uploadName = info.url.startsWith('nar/') ? info.url.slice(4) : ''
    const upload = parseNarFileName(uploadName) ? store.uploadPath(uploadName) : undefined
    let stored = await store.getNarFile(narFile)
    if (!stored) {
      if (!upload) await refuse('BAD_REQUEST', `the narinfo's URL ${JSON.stringify(info.url)} names no pushed NAR`)
      let measured
      try {
        measured = await verifyNarFile(upload!, info)
      } catch (err) {
        if (isNarthexError(err, 'STORE_IO')) await refuse('BAD_REQUEST', `push the NAR (${info.url}) before its narinfo`)
        await unlink(upload!).catch(() => undefined)
        await refuse('BAD_REQUEST', `the pushed NAR does not match its narinfo: ${(err as Error).message}`)
        throw err
      }
      stored = {
        fileHash: formatNixHash(measured.file.hash),
        fileSize: measured.file.size,
        narHash,
        narSize: measured.nar.size,
        compression: info.compression,
        storedAt: Date.now(),
      }
      await store.commitNar(upload!, narFile, stored)
    } else if (upload) {
      await unlink(upload).catch(() => undefined)
    }
    const admitted: NarInfo = { ...info, sigs }
    const record: NarInfoRecord = { narinfo: formatNarInfo(admitted), sources: [], rule: -1, signers, admittedAt: Date.now(), origin }
    // Its NAR was committed above, so its upload to the bucket is queued already.
    const pinned = await this.#d.pinInBucket?.(hashPart, record)
    if (pinned !== undefined && pinned !== narHash) {
      await refuse('PUSH_CONFLICT', `${storePath} is pinned in the bucket with ${pinned}; refusing ${narHash}`)
    }
    const event = withAuditId({ decision: origin, storePath, narHash, upstreams: [origin], signers, ...by })
    // The event is written with the admission, so a crash before the append is replayed at start.
    await store.putNarInfo(hashPart, narFile, narHash, record, event)
    await appendFromOutbox(store, audit, event)
    log.info({ path: storePath, signers, ...logBy }, `${origin} admitted`)
    this.#d.onAdmitted(hashPart)
    return 'admitted'
  }

  /**
   * Admits a pushed realisation (`PUT realisations/<id>.doi`): signed by enough
   * push keys, for a path narthex already holds (Nix pushes paths first), and
   * not contradicting one admitted before.
   * @returns `admitted`, or `unchanged` when the same output was admitted before.
   * @throws NarthexError BAD_REQUEST (malformed, another id, unknown output path),
   *   PUSH_REFUSED (signatures), PUSH_CONFLICT (another output was admitted before).
   */
  async receiveRealisation(id: string, text: string): Promise<'admitted' | 'unchanged'> {
    const { store, settings, audit, log } = this.#d
    const realisation = parseRealisation(text)
    const storePath = formatStorePath(realisation.outPath)
    if (realisation.id !== id) throw new NarthexError('BAD_REQUEST', `realisation of ${realisation.id} pushed as ${id}.doi`)
    const sigs = validRealisationSignatures(realisation, settings.publicKeys)
    const signers = [...new Set(sigs.map(signatureKeyName))].sort()
    const refuse = async (code: 'PUSH_REFUSED' | 'PUSH_CONFLICT' | 'BAD_REQUEST', message: string): Promise<never> => {
      await audit.append({ decision: 'refuse', storePath, upstreams: ['push'], signers, reason: code, message })
      log.warn({ id, path: storePath, code }, `realisation push refused: ${message}`)
      throw new NarthexError(code, message)
    }
    if (signers.length < settings.minSignatures) {
      await refuse('PUSH_REFUSED', `realisation ${id}: ${signers.length} of ${settings.minSignatures} required push signature(s)`)
    }
    const existing = await store.getRealisation(id)
    if (existing) {
      const before = parseRealisation(existing.realisation).outPath
      if (before.hashPart === realisation.outPath.hashPart) return 'unchanged'
      await refuse('PUSH_CONFLICT', `${id} was admitted before as ${formatStorePath(before)}; refusing ${storePath}`)
    }
    if (!(await store.getNarInfo(realisation.outPath.hashPart))) {
      await refuse('BAD_REQUEST', `push ${storePath} before its realisation ${id}`)
    }
    await store.putRealisation(id, {
      realisation: formatRealisation({ ...realisation, signatures: sigs }),
      origin: 'push',
      rule: -1,
      signers,
      admittedAt: Date.now(),
    })
    await audit.append({ decision: 'realisation', storePath, upstreams: ['push'], signers, message: id })
    log.info({ id, path: storePath, signers }, 'pushed realisation admitted')
    return 'admitted'
  }

  /**
   * Takes a pushed NAR listing (`PUT <hash>.ls`) and drops it: narthex serves
   * listings it writes from the NARs it verified.
   * @throws NarthexError PAYLOAD_TOO_LARGE past the listing cap.
   */
  async receiveListing(body: Readable): Promise<void> {
    let size = 0
    for await (const chunk of body) {
      size += (chunk as Buffer).length
      if (size > MAX_LISTING_BYTES) throw new NarthexError('PAYLOAD_TOO_LARGE', `listing larger than ${MAX_LISTING_BYTES} bytes`)
    }
  }

  /** Stores a pushed build log (`PUT log/<drv>`; see {@link storeBuildLog}). */
  async receiveLog(drvName: string, body: Readable, encoding: string | undefined): Promise<void> {
    await storeBuildLog(this.#d.store, drvName, body, encoding)
    this.#d.log.info({ drv: drvName, encoding }, 'build log pushed')
  }
}
