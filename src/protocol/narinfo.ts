/**
 * The `.narinfo` format, parsed and written as Nix does (src/libstore/nar-info.cc).
 *
 * Parser rules kept from Nix: `Key: value` lines separated by LF, the value starts
 * two characters after the first colon, the final newline is required, unknown
 * keys are ignored, the last scalar wins, `Sig` lines accumulate into a set, a
 * second non-empty `References` or `CA` is an error, a missing `Compression`
 * means bzip2, and StorePath, URL, NarHash and a non-zero NarSize are required.
 * narthex is stricter in two places: a line without `": "` is an error (Nix would
 * silently drop the character after the colon), and so is a `Compression` narthex
 * does not know. Nix keeps any string there and fails only when it comes to
 * decompress the NAR; narthex, which verifies every NAR it admits, refuses such
 * a narinfo at the boundary, so that `NarInfo.compression` is always a
 * {@link Compression}.
 */
import { NarthexError } from '../errors.js'
import { isCompression, type Compression } from './compression.js'
import { formatNixHash, parseNixHash, type NixHash } from './hash.js'
import { formatStorePath, parseStorePath, parseStorePathBase, type StorePath } from './store-path.js'

/** Largest narinfo narthex reads; anything larger is refused before parsing. */
export const MAX_NARINFO_BYTES = 1024 * 1024

/** A parsed narinfo. References and signatures are kept sorted and unique, as Nix keeps them. */
export interface NarInfo {
  readonly storePath: StorePath
  readonly url: string
  /** `xz`, `zstd`, `bzip2`, `br`, `none`, … (defaults to `bzip2` when absent, as in Nix). */
  readonly compression: Compression
  readonly fileHash?: NixHash
  readonly fileSize?: number
  readonly narHash: NixHash
  readonly narSize: number
  /** Basenames `<hash>-<name>`, sorted bytewise, no duplicates. */
  readonly references: readonly string[]
  /** Basename of the deriver, absent for `unknown-deriver`. */
  readonly deriver?: string
  /** `keyname:base64` signatures, sorted bytewise, no duplicates. */
  readonly sigs: readonly string[]
  /** Content address (`fixed:r:sha256:…`, `text:sha256:…`), when the path has one. */
  readonly ca?: string
}

/** Bytewise comparison of two ASCII strings (std::set<std::string> order). */
export function compareBytewise(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function sortedUnique(values: Iterable<string>): string[] {
  return [...new Set(values)].sort(compareBytewise)
}

function parseSize(value: string, field: string, line: number): number {
  if (!/^[0-9]+$/.test(value)) {
    throw new NarthexError('NARINFO_INVALID', `invalid ${field} at line ${line}`, { detail: { line, field } })
  }
  const n = Number(value)
  if (!Number.isSafeInteger(n)) {
    throw new NarthexError('NARINFO_INVALID', `${field} out of range at line ${line}`, { detail: { line, field } })
  }
  return n
}

/**
 * Parses narinfo text.
 * @param text the file's contents (at most {@link MAX_NARINFO_BYTES}).
 * @throws NarthexError NARINFO_INVALID with `detail.line` and `detail.field`.
 */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO_BYTES) {
    throw new NarthexError('NARINFO_INVALID', `narinfo is larger than ${MAX_NARINFO_BYTES} bytes`)
  }
  let storePath: StorePath | undefined
  let url = ''
  let compression: Compression = 'bzip2'
  let fileHash: NixHash | undefined
  let fileSize: number | undefined
  let narHash: NixHash | undefined
  let narSize = 0
  let references: string[] = []
  let deriver: string | undefined
  const sigs: string[] = []
  let ca: string | undefined

  let pos = 0
  let line = 1
  while (pos < text.length) {
    const eol = text.indexOf('\n', pos)
    if (eol < 0) {
      throw new NarthexError('NARINFO_INVALID', `expecting '\\n' at line ${line}`, { detail: { line } })
    }
    const colon = text.indexOf(': ', pos)
    if (colon < 0 || colon > eol) {
      throw new NarthexError('NARINFO_INVALID', `expecting ': ' at line ${line}`, { detail: { line } })
    }
    const field = text.slice(pos, colon)
    const value = text.slice(colon + 2, eol)
    const fail = (what: string, cause?: unknown): never => {
      throw new NarthexError('NARINFO_INVALID', `${what} at line ${line}`, { cause, detail: { line, field } })
    }
    const hashOf = (v: string): NixHash => {
      try {
        return parseNixHash(v)
      } catch (err) {
        return fail(`bad hash in ${field}`, err)
      }
    }
    const pathOf = (parse: () => StorePath): StorePath => {
      try {
        return parse()
      } catch (err) {
        return fail(`bad store path in ${field}`, err)
      }
    }
    switch (field) {
      case 'StorePath':
        storePath = pathOf(() => parseStorePath(value))
        break
      case 'URL':
        url = value
        break
      case 'Compression':
        // An empty value is Nix's default, as an absent line is.
        if (value === '') compression = 'bzip2'
        else if (isCompression(value)) compression = value
        else fail(`unknown compression ${JSON.stringify(value.slice(0, 40))}`)
        break
      case 'FileHash':
        fileHash = hashOf(value)
        break
      case 'FileSize':
        fileSize = parseSize(value, field, line)
        break
      case 'NarHash':
        narHash = hashOf(value)
        break
      case 'NarSize':
        narSize = parseSize(value, field, line)
        break
      case 'References': {
        const refs = value.split(' ').filter((r) => r !== '')
        if (references.length > 0 && refs.length > 0) fail('extra References')
        for (const ref of refs) pathOf(() => parseStorePathBase(ref))
        if (refs.length > 0) references = refs
        break
      }
      case 'Deriver':
        if (value === 'unknown-deriver') deriver = undefined
        else {
          pathOf(() => parseStorePathBase(value))
          deriver = value
        }
        break
      case 'Sig':
        sigs.push(value)
        break
      case 'CA':
        if (ca !== undefined) fail('extra CA')
        if (value !== '') ca = value
        break
      default:
        // Unknown keys (System, …) are ignored, as Nix ignores them.
        break
    }
    pos = eol + 1
    line++
  }

  const missing = !storePath
    ? 'StorePath missing'
    : !narHash
      ? 'NarHash missing'
      : url === ''
        ? 'URL missing'
        : narSize === 0
          ? 'NarSize missing or zero'
          : undefined
  if (missing || !storePath || !narHash) {
    throw new NarthexError('NARINFO_INVALID', missing ?? 'incomplete narinfo', {
      detail: { field: missing?.split(' ')[0] },
    })
  }
  return {
    storePath,
    url,
    compression,
    ...(fileHash ? { fileHash } : {}),
    ...(fileSize !== undefined ? { fileSize } : {}),
    narHash,
    narSize,
    references: sortedUnique(references),
    ...(deriver ? { deriver } : {}),
    sigs: sortedUnique(sigs),
    ...(ca ? { ca } : {}),
  }
}

/**
 * Writes a narinfo byte-identical to Nix's `NarInfo::to_string`: fields in Nix's
 * order, hashes as `sha256:<nix32>`, references and signatures sorted.
 */
export function formatNarInfo(info: NarInfo): string {
  let out = `StorePath: ${formatStorePath(info.storePath)}\n`
  out += `URL: ${info.url}\n`
  out += `Compression: ${info.compression}\n`
  if (info.fileHash) out += `FileHash: ${formatNixHash(info.fileHash)}\n`
  if (info.fileSize !== undefined) out += `FileSize: ${info.fileSize}\n`
  out += `NarHash: ${formatNixHash(info.narHash)}\n`
  out += `NarSize: ${info.narSize}\n`
  out += `References: ${sortedUnique(info.references).join(' ')}\n`
  if (info.deriver) out += `Deriver: ${info.deriver}\n`
  for (const sig of sortedUnique(info.sigs)) out += `Sig: ${sig}\n`
  if (info.ca) out += `CA: ${info.ca}\n`
  return out
}
