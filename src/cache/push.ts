/**
 * Pushes from `nix copy --to http://narthex`: NAR files first (`PUT
 * nar/<FileHash>.nar<ext>`), then their narinfo (`PUT <hash>.narinfo`). A NAR
 * waits in `uploads/` until its narinfo arrives; the narinfo is admitted only
 * when it carries enough valid signatures by the configured push keys, does not
 * conflict with what narthex admitted before for that path, and its NAR
 * verifies (FileHash, FileSize, NarHash, NarSize, grammar). Then the NAR moves
 * into the store, the narinfo is indexed, and the push is audited.
 */
import { createWriteStream } from 'node:fs'
import { open, rename, unlink } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Logger } from 'pino'
import { NarthexError, isNarthexError } from '../errors.js'
import {
  encodeNix32,
  formatNarInfo,
  formatNixHash,
  formatStorePath,
  HashingPassThrough,
  narFileNameOf,
  parseNarFileName,
  parseNarInfo,
  validSignatures,
  signatureKeyName,
  type NarInfo,
  type PublicKey,
} from '../protocol/index.js'
import type { AuditLog, Store } from '../store/index.js'
import { verifyNarFile } from './verify-file.js'

/** Push settings (the config's `push` section, keys parsed). */
export interface PushSettings {
  readonly publicKeys: readonly PublicKey[]
  readonly minSignatures: number
  readonly maxNarBytes: number
}

/** What a {@link PushReceiver} needs. */
export interface PushDeps {
  readonly store: Store
  readonly audit: AuditLog
  readonly log: Logger
  readonly settings: PushSettings
  /** Called after a push was admitted, so cached answers for the hash part are dropped. */
  readonly onAdmitted: (hashPart: string) => void
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
   * Admits a pushed narinfo.
   * @returns `admitted`, or `unchanged` when the same NarHash was admitted before.
   * @throws NarthexError NARINFO_INVALID, BAD_REQUEST (missing or bad NAR),
   *   PUSH_REFUSED (signatures), PUSH_CONFLICT (another NarHash was admitted before).
   */
  async receiveNarInfo(hashPart: string, text: string, origin: 'push' | 'import' = 'push'): Promise<'admitted' | 'unchanged'> {
    const { store, settings, audit, log } = this.#d
    const info = parseNarInfo(text)
    const storePath = formatStorePath(info.storePath)
    if (info.storePath.hashPart !== hashPart) {
      throw new NarthexError('BAD_REQUEST', `narinfo for ${storePath} pushed as ${hashPart}.narinfo`)
    }
    const sigs = validSignatures(info, settings.publicKeys)
    const signers = [...new Set(sigs.map(signatureKeyName))].sort()
    const narHash = formatNixHash(info.narHash)
    const refuse = async (code: 'PUSH_REFUSED' | 'PUSH_CONFLICT' | 'BAD_REQUEST', message: string): Promise<never> => {
      await audit.append({ decision: 'refuse', storePath, narHash, upstreams: [origin], signers, reason: code, message })
      log.warn({ path: storePath, code }, `${origin} refused: ${message}`)
      throw new NarthexError(code, message)
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
    await store.putNarInfo(hashPart, narFile, narHash, {
      narinfo: formatNarInfo(admitted),
      sources: [],
      rule: -1,
      signers,
      admittedAt: Date.now(),
      origin,
    })
    await audit.append({ decision: origin, storePath, narHash, upstreams: [origin], signers })
    log.info({ path: storePath, signers }, `${origin} admitted`)
    this.#d.onAdmitted(hashPart)
    return 'admitted'
  }
}
