/**
 * NAR file names, `<nix32 hash>.nar<ext>`, as Nix writes them into a binary
 * cache (`nar/<FileHash>.nar.xz`) and as narthex names its stored NARs (after
 * their NarHash); the NAR URLs of narthex's narinfos (`nar/<hashPart>/<fileName>`);
 * and the sharded layout of narthex's `nar/` directory.
 */
import { COMPRESSION_EXTENSIONS, compressionOfExtension, type Compression } from './compression.js'
import { HASH_SIZES } from './hash.js'
import type { NarInfo } from './narinfo.js'
import { encodeNix32, nix32Length, NIX32_CHAR_CLASS } from './nixbase32.js'
import { HASH_PART_PATTERN } from './store-path.js'

/** Characters of the nix32 hash in a NAR file name (a sha256 digest). */
const NAR_HASH_CHARS = nix32Length(HASH_SIZES.sha256)

const EXTENSIONS = Object.values(COMPRESSION_EXTENSIONS)
  .filter((e) => e !== '')
  .map((e) => e.replaceAll('.', '\\.'))
  .join('|')

/**
 * A regular-expression source matching one NAR file name, unanchored:
 * 52 nix32 characters (a sha256), `.nar`, and the extension of a known
 * compression or none. It admits no `/`, so it is safe to join to a directory.
 */
export const NAR_FILE_NAME_PATTERN = `${NIX32_CHAR_CLASS}{${NAR_HASH_CHARS}}\\.nar(?:${EXTENSIONS})?`

const NAR_FILE_NAME = new RegExp(`^${NAR_FILE_NAME_PATTERN}$`)

/**
 * A regular-expression source matching the NAR URL of a narinfo, unanchored:
 * `nar/<hashPart>/<fileName>` (the form narthex serves) or `nar/<fileName>`
 * (the form Nix writes, and narthex served before). Group 1 is the hash part
 * when present, group 2 the file name. It admits no `..` and no empty segment.
 */
export const NAR_URL_PATTERN = `nar/(?:(${HASH_PART_PATTERN})/)?(${NAR_FILE_NAME_PATTERN})`

const NAR_URL = new RegExp(`^${NAR_URL_PATTERN}$`)

/**
 * A narinfo's NAR URL: `nar/<hashPart>/<fileName>`, the form narthex serves, or
 * Nix's flat `nar/<fileName>` without `hashPart` (a `file://` cache's layout).
 * The store path's hash part comes first so that a balancer hashing requests on
 * it sends a path's narinfo, listing and NAR requests to the same node, and so
 * that a node asked for the NAR alone knows which narinfo to resolve first.
 */
export function narUrl(fileName: string, hashPart?: string): string {
  return hashPart === undefined ? `nar/${fileName}` : `nar/${hashPart}/${fileName}`
}

/**
 * Splits a narinfo's NAR URL of either form ({@link narUrl}).
 * @returns undefined when `url` is neither (another cache's layout, a query string).
 */
export function parseNarUrl(url: string): { readonly hashPart: string | undefined; readonly fileName: string } | undefined {
  const m = NAR_URL.exec(url)
  return m ? { hashPart: m[1], fileName: m[2] } : undefined
}

/** The NAR file name for a hash and compression: `<nix32>.nar<ext>`. */
export function narFileName(nix32: string, compression: Compression): string {
  return `${nix32}.nar${COMPRESSION_EXTENSIONS[compression]}`
}

/** The name narthex stores a narinfo's NAR under: its NarHash in nix32, and its compression's extension. */
export function narFileNameOf(info: Pick<NarInfo, 'narHash' | 'compression'>): string {
  return narFileName(encodeNix32(info.narHash.digest), info.compression)
}

/**
 * Splits `<nix32>.nar<ext>` into its hash and compression.
 * @returns undefined when `fileName` does not match {@link NAR_FILE_NAME_PATTERN}.
 */
export function parseNarFileName(fileName: string): { nix32: string; compression: Compression } | undefined {
  if (!NAR_FILE_NAME.test(fileName)) return undefined
  const compression = compressionOfExtension(fileName.slice(NAR_HASH_CHARS + 4))
  return compression === undefined ? undefined : { nix32: fileName.slice(0, NAR_HASH_CHARS), compression }
}

/**
 * Where narthex keeps a NAR file, relative to its `nar/` directory:
 * `<first two characters>/<fileName>`, so that no directory holds millions of
 * files. The store writes this layout and the worker fronts read it.
 * @param fileName a name {@link parseNarFileName} accepts (not checked here).
 */
export function narShardPath(fileName: string): string {
  return `${fileName.slice(0, 2)}/${fileName}`
}
