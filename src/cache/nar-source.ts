/**
 * NAR sources: where an admitted path's NAR file can be fetched (an upstream,
 * its URL there, and the unsigned fields that upstream gave). Shared by narinfo
 * resolution, which records the sources of an admission, and NAR fetching,
 * which adds and uses them.
 */
import { formatNixHash, parseNixHash, type NarInfo } from '../protocol/index.js'
import type { SourceRecord } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'

/**
 * The source record of an upstream's narinfo: its NAR URL resolved on that upstream.
 * @throws NarthexError UPSTREAM_INVALID when the URL is unusable (see {@link Upstream.resolveUrl}).
 */
export function sourceOf(upstream: Upstream, info: NarInfo): SourceRecord {
  return {
    upstream: upstream.name,
    url: upstream.resolveUrl(info.url),
    compression: info.compression,
    ...(info.fileHash ? { fileHash: formatNixHash(info.fileHash) } : {}),
    ...(info.fileSize !== undefined ? { fileSize: info.fileSize } : {}),
  }
}

/** The admitted narinfo with a source's unsigned fields: its URL, compression, FileHash and FileSize. */
export function describedBy(info: NarInfo, source: SourceRecord): NarInfo {
  return {
    ...info,
    url: source.url,
    compression: source.compression,
    fileHash: source.fileHash ? parseNixHash(source.fileHash) : undefined,
    fileSize: source.fileSize,
  }
}
