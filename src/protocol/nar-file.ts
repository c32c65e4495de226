/**
 * NAR file names, `<nix32 hash>.nar<ext>`, as Nix writes them into a binary
 * cache (`nar/<FileHash>.nar.xz`) and as narthex names its stored NARs (after
 * their NarHash), and the sharded layout of narthex's `nar/` directory.
 */
import { COMPRESSION_EXTENSIONS, compressionOfExtension, type Compression } from './compression.js'
import { HASH_SIZES } from './hash.js'
import type { NarInfo } from './narinfo.js'
import { encodeNix32, nix32Length, NIX32_CHAR_CLASS } from './nixbase32.js'

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
