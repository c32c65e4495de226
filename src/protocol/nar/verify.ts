/**
 * Streams that hash what flows through them: {@link NarSink} consumes an
 * uncompressed NAR (NarHash, NarSize, grammar), {@link HashingPassThrough}
 * measures the compressed bytes (FileHash, FileSize) while passing them on.
 * Both fail as early as possible: as soon as more bytes than expected arrive.
 */
import { createHash, type Hash } from 'node:crypto'
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { NarthexError } from '../../errors.js'
import { formatNixHash, nixHashEquals, sha256Hash, type NixHash } from '../hash.js'
import { DEFAULT_NAR_LIMITS, NarParser, type NarLimits, type NarStats } from './parser.js'

/** What a NAR (or a file) is expected to be; either field may be absent. */
export interface Expected {
  readonly hash?: NixHash
  readonly size?: number
}

/** The measured hash and size of a stream. */
export interface Measured {
  readonly hash: NixHash
  readonly size: number
}

/**
 * Fails as soon as `size` bytes are more than expected.
 * @throws NarthexError SIZE_MISMATCH
 */
export function checkSize(what: string, size: number, expected: Expected): void {
  if (expected.size !== undefined && size > expected.size) {
    throw new NarthexError('SIZE_MISMATCH', `${what} is larger than the expected ${expected.size} bytes`, {
      detail: { expectedSize: expected.size },
    })
  }
}

/**
 * Compares what was measured with what was expected, once all bytes are in.
 * @throws NarthexError SIZE_MISMATCH, HASH_MISMATCH
 */
export function checkFinal(what: string, measured: Measured, expected: Expected): void {
  if (expected.size !== undefined && measured.size !== expected.size) {
    throw new NarthexError('SIZE_MISMATCH', `${what} has ${measured.size} bytes, expected ${expected.size}`, {
      detail: { expectedSize: expected.size, size: measured.size },
    })
  }
  if (expected.hash && !nixHashEquals(expected.hash, measured.hash)) {
    throw new NarthexError(
      'HASH_MISMATCH',
      `${what} hash ${formatNixHash(measured.hash)} does not match the expected ${formatNixHash(expected.hash)}`,
      { detail: { expected: formatNixHash(expected.hash), got: formatNixHash(measured.hash) } },
    )
  }
}

function hashAlgorithm(expected: Expected): string {
  return expected.hash?.algorithm ?? 'sha256'
}

/**
 * A Writable that takes an uncompressed NAR, validates its grammar, and computes
 * NarHash and NarSize. When `expected` is given, the stream errors with
 * SIZE_MISMATCH as soon as it runs past the size, and with HASH_MISMATCH or
 * SIZE_MISMATCH at the end; NAR_INVALID on a grammar violation.
 * After 'finish', {@link NarSink.result} holds the measured values.
 */
export class NarSink extends Writable {
  readonly #hash: Hash
  readonly #parser: NarParser
  #size = 0
  #result: Measured | undefined

  constructor(
    readonly expected: Expected = {},
    limits: NarLimits = DEFAULT_NAR_LIMITS,
  ) {
    super({ highWaterMark: 1 << 20 })
    this.#hash = createHash(hashAlgorithm(expected))
    this.#parser = new NarParser(limits)
  }

  /** NarHash and NarSize, once the stream has finished. */
  get result(): Measured | undefined {
    return this.#result
  }

  /** Counts of files, symlinks and directories seen so far. */
  get stats(): NarStats {
    return this.#parser.stats
  }

  /**
   * Checks a chunk at once, without the stream machinery; the chunk is not kept,
   * so callers may reuse its buffer. Do not mix with `write()`.
   * @throws NarthexError SIZE_MISMATCH, NAR_INVALID
   */
  check(chunk: Uint8Array): void {
    this.#size += chunk.length
    checkSize('NAR', this.#size, this.expected)
    this.#parser.push(chunk)
    this.#hash.update(chunk)
  }

  /**
   * Ends a NAR fed by {@link NarSink.check} and returns NarHash and NarSize.
   * @throws NarthexError NAR_INVALID, SIZE_MISMATCH, HASH_MISMATCH
   */
  finish(): Measured {
    this.#parser.end()
    const measured = { hash: { algorithm: this.expected.hash?.algorithm ?? 'sha256', digest: this.#hash.digest() }, size: this.#size }
    checkFinal('NAR', measured, this.expected)
    this.#result = measured
    return measured
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.check(chunk)
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    try {
      this.finish()
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }
}

/**
 * A Transform that passes bytes through unchanged while hashing and counting them
 * (FileHash/FileSize of a compressed NAR). Errors with SIZE_MISMATCH as soon as it
 * runs past `expected.size`, and with HASH_MISMATCH/SIZE_MISMATCH at the end.
 */
export class HashingPassThrough extends Transform {
  readonly #hash: Hash
  #size = 0
  #result: Measured | undefined

  /**
   * @param maxBytes a cap for streams of unknown size: passing it errors the
   *   stream with PAYLOAD_TOO_LARGE.
   */
  constructor(
    readonly expected: Expected = {},
    readonly what = 'file',
    readonly maxBytes = Number.MAX_SAFE_INTEGER,
  ) {
    super({ highWaterMark: 1 << 20 })
    this.#hash = createHash(hashAlgorithm(expected))
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.#size
  }

  /** The file's hash and size, once the stream has ended. */
  get result(): Measured | undefined {
    return this.#result
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#size += chunk.length
    try {
      checkSize(this.what, this.#size, this.expected)
      if (this.#size > this.maxBytes) {
        throw new NarthexError('PAYLOAD_TOO_LARGE', `${this.what} is larger than ${this.maxBytes} bytes`, { detail: { maxBytes: this.maxBytes } })
      }
    } catch (err) {
      callback(err as Error)
      return
    }
    this.#hash.update(chunk)
    callback(null, chunk)
  }

  override _flush(callback: TransformCallback): void {
    const measured = { hash: { algorithm: this.expected.hash?.algorithm ?? 'sha256', digest: this.#hash.digest() }, size: this.#size }
    try {
      checkFinal(this.what, measured, this.expected)
    } catch (err) {
      callback(err as Error)
      return
    }
    this.#result = measured
    callback()
  }
}

/** sha256 of a whole in-memory buffer as a {@link NixHash} (for small data: narinfos, tests). */
export function sha256Of(data: Uint8Array): NixHash {
  return sha256Hash(createHash('sha256').update(data).digest())
}
