/**
 * NAR compression methods as named in narinfo `Compression:` fields, and the
 * NAR file extension of each.
 */

/**
 * The compression methods narthex knows, each with the extension of its NAR
 * files. This table is the only list of them. Nix names a NAR file by the same
 * extensions (binary-cache-store.cc) except for gzip: Nix gives a gzip NAR no
 * extension at all (`<hash>.nar`), while narthex's own store and URLs use `.gz`.
 */
export const COMPRESSION_EXTENSIONS = {
  none: '',
  xz: '.xz',
  bzip2: '.bz2',
  zstd: '.zst',
  br: '.br',
  lz4: '.lz4',
  lzip: '.lzip',
  gzip: '.gz',
} as const

/** A compression method name known to narthex. */
export type Compression = keyof typeof COMPRESSION_EXTENSIONS

/** True when `name` is a compression method narthex knows. */
export function isCompression(name: string): name is Compression {
  return Object.hasOwn(COMPRESSION_EXTENSIONS, name)
}

// Looked up for every NAR file name narthex parses (each NAR request, each file of a repair).
const BY_EXTENSION: ReadonlyMap<string, Compression> = new Map(
  Object.entries(COMPRESSION_EXTENSIONS).map(([compression, ext]) => [ext, compression as Compression]),
)

/** The compression whose NAR file extension is `ext` (`''` for none), or undefined. */
export function compressionOfExtension(ext: string): Compression | undefined {
  return BY_EXTENSION.get(ext)
}

/**
 * False when a NAR URL's extension names another compression than `compression`
 * (`nar/….nar.xz` with `Compression: bzip2`): one of the two unsigned fields was
 * damaged. A bare `.nar` or an extension narthex does not recognise is given the
 * benefit of the doubt (some caches serve compressed NARs under `nar/<hash>.nar`,
 * as Nix itself does for gzip).
 */
export function urlAgreesWithCompression(url: string, compression: Compression): boolean {
  const path = url.split(/[?#]/, 1)[0]
  const dot = path.lastIndexOf('.nar')
  if (dot < 0) return true
  const ext = path.slice(dot + 4)
  if (ext === '') return true
  const named = compressionOfExtension(ext)
  return named === undefined || named === compression
}
