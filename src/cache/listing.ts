/**
 * Answering `GET /<hashPart>.ls`: the listing of an admitted path's NAR, as
 * Nix writes it with `write-nar-listing=true`. narthex never passes on an
 * upstream's or a pusher's listing: it writes its own from the stored NAR,
 * which it verified, read as a stream through the decompressor and the NAR
 * parser (never held in memory). Listings up to {@link KEPT_LISTING_BYTES} are
 * kept in the index; larger ones are written again on each request, and one
 * past the cap is refused rather than built.
 */
import { createReadStream } from 'node:fs'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isNarthexError } from '../errors.js'
import {
  COMPRESSION_EXTENSIONS,
  encodeNix32,
  MAX_LISTING_BYTES,
  narFileName,
  NarListingWriter,
  NarParser,
  parseNarInfo,
  type Compression,
} from '../protocol/index.js'
import { createDecompressor, type NarFileRecord, type Store } from '../store/index.js'

/** The answer to a listing request. */
export type ListingAnswer =
  | { readonly kind: 'found'; readonly text: string }
  | { readonly kind: 'absent' }
  | { readonly kind: 'too-large' }

/** Listings up to this size are kept in the index. */
export const KEPT_LISTING_BYTES = 256 * 1024

/** Writes listings of stored NARs; concurrent requests for one NAR share one pass. */
export class ListingWriter {
  readonly #running = new Map<string, Promise<ListingAnswer>>()

  constructor(
    readonly store: Store,
    readonly maxBytes: number = MAX_LISTING_BYTES,
  ) {}

  /**
   * The listing of the admitted path `hashPart`: absent when narthex has not
   * admitted it or does not hold its NAR (yet).
   */
  async get(hashPart: string): Promise<ListingAnswer> {
    const record = await this.store.getNarInfo(hashPart)
    if (!record) return { kind: 'absent' }
    const nix32 = encodeNix32(parseNarInfo(record.narinfo).narHash.digest)
    const kept = await this.store.getListing(nix32)
    if (kept !== undefined) return { kind: 'found', text: kept }
    const file = await this.#storedFile(nix32)
    if (!file) return { kind: 'absent' }
    let pending = this.#running.get(nix32)
    if (!pending) {
      pending = this.#write(nix32, file.name, file.record).finally(() => this.#running.delete(nix32))
      this.#running.set(nix32, pending)
    }
    return pending
  }

  /** The stored NAR file of a NarHash, whichever compression it was stored with. */
  async #storedFile(nix32: string): Promise<{ name: string; record: NarFileRecord } | undefined> {
    for (const compression of Object.keys(COMPRESSION_EXTENSIONS) as Compression[]) {
      const name = narFileName(nix32, compression)
      const record = await this.store.getNarFile(name)
      if (record) return { name, record }
    }
    return undefined
  }

  async #write(nix32: string, fileName: string, record: NarFileRecord): Promise<ListingAnswer> {
    const writer = new NarListingWriter(this.maxBytes)
    const parser = new NarParser(undefined, writer)
    const sink = new Writable({
      highWaterMark: 1 << 20,
      write(chunk: Buffer, _enc, done) {
        try {
          parser.push(chunk)
          done()
        } catch (err) {
          done(err as Error)
        }
      },
      final(done) {
        try {
          parser.end()
          done()
        } catch (err) {
          done(err as Error)
        }
      },
    })
    try {
      await pipeline(createReadStream(this.store.narPath(fileName)), createDecompressor(record.compression, record.fileSize), sink)
    } catch (err) {
      if (isNarthexError(err, 'PAYLOAD_TOO_LARGE')) return { kind: 'too-large' }
      // A name that is not UTF-8 cannot be listed (Nix cannot either); a NAR evicted meanwhile is gone.
      if (isNarthexError(err, 'NAR_INVALID') || (err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' }
      throw err
    }
    const text = writer.text
    if (Buffer.byteLength(text) <= KEPT_LISTING_BYTES) await this.store.putListing(nix32, text)
    return { kind: 'found', text }
  }
}
