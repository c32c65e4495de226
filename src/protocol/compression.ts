/**
 * NAR compression methods as named in narinfo `Compression:` fields, and the
 * file extension Nix gives each (binary-cache-store.cc).
 */

/** Compression methods Nix writes, mapped to the NAR file extension it uses for them. */
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

/** The NAR file name for a hash and compression: `<nix32>.nar<ext>`. */
export function narFileName(nix32: string, compression: Compression): string {
  return `${nix32}.nar${COMPRESSION_EXTENSIONS[compression]}`
}

/** Splits `<nix32>.nar<ext>` into its hash and compression, or undefined when it is not one. */
export function parseNarFileName(fileName: string): { nix32: string; compression: Compression } | undefined {
  const dot = fileName.indexOf('.nar')
  if (dot <= 0) return undefined
  const ext = fileName.slice(dot + 4)
  for (const [compression, e] of Object.entries(COMPRESSION_EXTENSIONS)) {
    if (e === ext) return { nix32: fileName.slice(0, dot), compression: compression as Compression }
  }
  return undefined
}

/**
 * False when a NAR URL's extension names another compression than `compression`
 * (`nar/….nar.xz` with `Compression: bzip2`): one of the two unsigned fields was
 * damaged. A bare `.nar` or an extension narthex does not recognise is given the
 * benefit of the doubt (some caches serve compressed NARs under `nar/<hash>.nar`).
 */
export function urlAgreesWithCompression(url: string, compression: string): boolean {
  const path = url.split(/[?#]/, 1)[0]!
  const dot = path.lastIndexOf('.nar')
  if (dot < 0) return true
  const ext = path.slice(dot + 4)
  if (ext === '') return true
  const named = Object.entries(COMPRESSION_EXTENSIONS).find(([, e]) => e === ext)?.[0]
  return named === undefined || named === compression
}
