/**
 * A streaming NAR validator: bytes are pushed in chunks of any size and checked
 * against the NAR grammar of Nix's archive.cc as they arrive, without buffering
 * file contents. Every length field is bounded before anything is allocated.
 *
 * ```
 * nar  = str("nix-archive-1") node
 * node = "(" "type" ( "regular" ["executable" ""] "contents" <bytes>
 *                   | "symlink" "target" <target>
 *                   | "directory" { "entry" "(" "name" <name> "node" node ")" } ) ")"
 * ```
 * A `str` is a u64 little-endian length, the bytes, and zero padding to 8.
 */
import { NarthexError } from '../../errors.js'

/** Bounds applied while parsing; the defaults suit any real store path. */
export interface NarLimits {
  /** Longest entry name in bytes (Linux NAME_MAX is 255). */
  readonly maxNameBytes: number
  /** Longest symlink target in bytes (Linux PATH_MAX is 4096). */
  readonly maxTargetBytes: number
  /** Deepest directory nesting. */
  readonly maxDepth: number
}

/** Default {@link NarLimits}. */
export const DEFAULT_NAR_LIMITS: NarLimits = { maxNameBytes: 1024, maxTargetBytes: 4096, maxDepth: 256 }

/**
 * Told of each node as the parser reads it, in archive order (names as latin1
 * strings, one code unit per byte). Used to list a NAR without holding it.
 */
export interface NarVisitor {
  /** A directory starts; its entries follow, then {@link NarVisitor.directoryEnd}. */
  directory(): void
  /** The next entry of the current directory; its node follows. */
  entry(name: string): void
  /** The current directory has no more entries. */
  directoryEnd(): void
  /** A regular file; `narOffset` is where its contents start in the NAR. */
  regular(size: number, executable: boolean, narOffset: number): void
  symlink(target: string): void
}

/** Counts gathered while parsing. */
export interface NarStats {
  regularFiles: number
  executables: number
  symlinks: number
  directories: number
}

// What the grammar asks the byte driver for next: a bounded string token, or
// file contents (skipped, never buffered).
type Need = { readonly kind: 'str'; readonly max: number } | { readonly kind: 'contents' }
type Grammar = Generator<Need, void, string | number>

const TOKEN: Need = { kind: 'str', max: 64 }
const CONTENTS: Need = { kind: 'contents' }

function invalid(message: string, offset: number): NarthexError {
  return new NarthexError('NAR_INVALID', `invalid NAR at byte ${offset}: ${message}`, { detail: { offset } })
}

/**
 * Incremental NAR parser. Call {@link NarParser.push} with consecutive chunks and
 * {@link NarParser.end} after the last; both throw NarthexError NAR_INVALID at
 * the first violation (bad token, oversized or unsorted name, non-zero padding,
 * truncation, trailing bytes).
 */
export class NarParser {
  readonly stats: NarStats = { regularFiles: 0, executables: 0, symlinks: 0, directories: 0 }
  #grammar: Grammar
  #need: Need | undefined
  #offset = 0
  // Reading state of the current token: its length prefix, then body, then padding.
  #phase: 'len' | 'body' | 'pad' = 'len'
  #lenBuf = Buffer.alloc(8)
  #lenFill = 0
  #remaining = 0
  #padRemaining = 0
  #body: Buffer | undefined
  #bodyFill = 0
  #tokenLength = 0

  constructor(
    readonly limits: NarLimits = DEFAULT_NAR_LIMITS,
    readonly visitor?: NarVisitor,
  ) {
    this.#grammar = this.#nar()
    this.#need = this.#advance(undefined)
  }

  /** True once a complete NAR has been read. */
  get done(): boolean {
    return this.#need === undefined
  }

  /** Feeds the next chunk. */
  push(chunk: Uint8Array): void {
    let i = 0
    while (i < chunk.length) {
      if (this.#need === undefined) throw invalid('trailing bytes after the end of the archive', this.#offset)
      if (this.#phase === 'len') {
        const take = Math.min(8 - this.#lenFill, chunk.length - i)
        for (let k = 0; k < take; k++) this.#lenBuf[this.#lenFill++] = chunk[i + k]!
        i += take
        this.#offset += take
        if (this.#lenFill === 8) this.#startBody()
      } else if (this.#phase === 'body') {
        const take = Math.min(this.#remaining, chunk.length - i)
        if (this.#body) {
          this.#body.set(chunk.subarray(i, i + take), this.#bodyFill)
          this.#bodyFill += take
        }
        i += take
        this.#offset += take
        this.#remaining -= take
        if (this.#remaining === 0) this.#endBody()
      } else {
        const take = Math.min(this.#padRemaining, chunk.length - i)
        for (let k = 0; k < take; k++) {
          if (chunk[i + k] !== 0) throw invalid('non-zero padding', this.#offset + k)
        }
        i += take
        this.#offset += take
        this.#padRemaining -= take
        if (this.#padRemaining === 0) this.#finishToken()
      }
    }
  }

  /** Declares the end of input. @throws NarthexError NAR_INVALID when the archive is incomplete. */
  end(): void {
    if (this.#need !== undefined) throw invalid('archive is truncated', this.#offset)
  }

  #startBody(): void {
    const length = this.#lenBuf.readBigUInt64LE(0)
    const need = this.#need!
    if (need.kind === 'str' && length > BigInt(need.max)) {
      throw invalid(`string of ${length} bytes where at most ${need.max} are allowed`, this.#offset - 8)
    }
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`length ${length} out of range`, this.#offset - 8)
    this.#tokenLength = Number(length)
    this.#remaining = this.#tokenLength
    this.#padRemaining = (8 - (this.#tokenLength % 8)) % 8
    this.#body = need.kind === 'str' ? Buffer.allocUnsafe(this.#tokenLength) : undefined
    this.#bodyFill = 0
    this.#phase = 'body'
    if (this.#remaining === 0) this.#endBody()
  }

  #endBody(): void {
    this.#phase = 'pad'
    if (this.#padRemaining === 0) this.#finishToken()
  }

  #finishToken(): void {
    // latin1 maps bytes one-to-one onto code units, so string order is byte order.
    const value = this.#body ? this.#body.toString('latin1') : this.#tokenLength
    this.#phase = 'len'
    this.#lenFill = 0
    this.#body = undefined
    this.#need = this.#advance(value)
  }

  #advance(value: string | number | undefined): Need | undefined {
    const step = this.#grammar.next(value as string | number)
    return step.done ? undefined : step.value
  }

  *#expect(token: string): Grammar {
    const got = yield TOKEN
    if (got !== token) throw invalid(`expected ${JSON.stringify(token)}, got ${JSON.stringify(got)}`, this.#offset)
  }

  *#nar(): Grammar {
    const magic = yield TOKEN
    if (magic !== 'nix-archive-1') throw invalid('not a NAR (bad magic)', 0)
    yield* this.#node(0)
  }

  *#node(depth: number): Grammar {
    if (depth > this.limits.maxDepth) throw invalid(`directories nested deeper than ${this.limits.maxDepth}`, this.#offset)
    yield* this.#expect('(')
    yield* this.#expect('type')
    const type = yield TOKEN
    if (type === 'regular') {
      this.stats.regularFiles++
      let tag = yield TOKEN
      const executable = tag === 'executable'
      if (executable) {
        this.stats.executables++
        yield* this.#expect('')
        tag = yield TOKEN
      }
      if (tag !== 'contents') throw invalid(`expected "contents", got ${JSON.stringify(tag)}`, this.#offset)
      const size = (yield CONTENTS) as number
      // The driver resumes here after the contents and their padding.
      this.visitor?.regular(size, executable, this.#offset - size - ((8 - (size % 8)) % 8))
      yield* this.#expect(')')
    } else if (type === 'symlink') {
      this.stats.symlinks++
      yield* this.#expect('target')
      const target = (yield { kind: 'str', max: this.limits.maxTargetBytes }) as string
      if (target.length === 0 || target.includes('\0')) throw invalid('empty symlink target or one with NUL', this.#offset)
      this.visitor?.symlink(target)
      yield* this.#expect(')')
    } else if (type === 'directory') {
      this.stats.directories++
      this.visitor?.directory()
      let previous: string | undefined
      for (;;) {
        const tag = yield TOKEN
        if (tag === ')') {
          this.visitor?.directoryEnd()
          break
        }
        if (tag !== 'entry') throw invalid(`expected "entry" or ")", got ${JSON.stringify(tag)}`, this.#offset)
        yield* this.#expect('(')
        yield* this.#expect('name')
        const name = (yield { kind: 'str', max: this.limits.maxNameBytes }) as string
        if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
          throw invalid(`forbidden entry name ${JSON.stringify(name)}`, this.#offset)
        }
        if (previous !== undefined && name <= previous) {
          throw invalid(`entry ${JSON.stringify(name)} is not sorted after ${JSON.stringify(previous)}`, this.#offset)
        }
        previous = name
        this.visitor?.entry(name)
        yield* this.#expect('node')
        yield* this.#node(depth + 1)
        yield* this.#expect(')')
      }
    } else {
      throw invalid(`unknown node type ${JSON.stringify(type)}`, this.#offset)
    }
  }
}
