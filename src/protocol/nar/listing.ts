/**
 * The `<hashPart>.ls` file of a binary cache: a JSON listing of a NAR's tree,
 * as Nix's `listNar` (nar-accessor.cc) writes it with `write-nar-listing=true`
 * and reads it for `nix store ls` / `nix store cat` on a binary cache:
 *
 * ```
 * {"root":NODE,"version":1}
 * NODE = {"entries":{NAME:NODE,…},"type":"directory"}
 *      | {"executable":true,"narOffset":N,"size":S,"type":"regular"}   (executable only when set)
 *      | {"target":T,"type":"symlink"}
 * ```
 * Keys are in byte order (nlohmann::json's std::map), the dump is compact, and
 * `narOffset` is where the file's contents start in the uncompressed NAR.
 * {@link NarListingWriter} produces that text while a {@link NarParser} reads the
 * NAR, so a NAR is never held: only the listing is, and it is capped.
 */
import { NarthexError } from '../../errors.js'
import type { NarVisitor } from './parser.js'

/** The largest listing narthex writes by default (a tree of a few hundred thousand files). */
export const MAX_LISTING_BYTES = 16 * 1024 * 1024

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** A NAR name or target (latin1, one code unit per byte) as the JSON string Nix writes. */
function jsonString(latin1: string, what: string): string {
  let text: string
  try {
    text = utf8.decode(Buffer.from(latin1, 'latin1'))
  } catch {
    // nlohmann::json refuses to dump invalid UTF-8, so Nix cannot list such a NAR either.
    throw new NarthexError('NAR_INVALID', `the NAR has a ${what} that is not UTF-8; it cannot be listed`)
  }
  return JSON.stringify(text)
}

/**
 * A {@link NarVisitor} that writes the listing as the NAR is parsed. Pass it to
 * `new NarParser(limits, writer)`, feed the parser, then read {@link text}.
 * @throws NarthexError PAYLOAD_TOO_LARGE (from the visitor calls) once the
 *   listing would pass `maxBytes`; NAR_INVALID for a name that is not UTF-8.
 */
export class NarListingWriter implements NarVisitor {
  readonly #parts: string[] = ['{"root":']
  readonly #firstInDir: boolean[] = []
  #bytes = 8
  #done = false

  constructor(readonly maxBytes: number = MAX_LISTING_BYTES) {}

  /** The listing; only once the whole NAR was parsed. */
  get text(): string {
    if (!this.#done) {
      this.#done = true
      this.#add(',"version":1}')
    }
    return this.#parts.join('')
  }

  directory(): void {
    this.#add('{"entries":{')
    this.#firstInDir.push(true)
  }

  entry(name: string): void {
    const first = this.#firstInDir[this.#firstInDir.length - 1]
    this.#firstInDir[this.#firstInDir.length - 1] = false
    this.#add(`${first ? '' : ','}${jsonString(name, 'file name')}:`)
  }

  directoryEnd(): void {
    this.#firstInDir.pop()
    this.#add('},"type":"directory"}')
  }

  regular(size: number, executable: boolean, narOffset: number): void {
    this.#add(`{${executable ? '"executable":true,' : ''}"narOffset":${narOffset},"size":${size},"type":"regular"}`)
  }

  symlink(target: string): void {
    this.#add(`{"target":${jsonString(target, 'symlink target')},"type":"symlink"}`)
  }

  #add(part: string): void {
    this.#bytes += Buffer.byteLength(part)
    if (this.#bytes > this.maxBytes) {
      throw new NarthexError('PAYLOAD_TOO_LARGE', `the NAR's listing is larger than ${this.maxBytes} bytes`)
    }
    this.#parts.push(part)
  }
}
