/** What the store's index keeps: admitted narinfos and realisations, their NAR sources, stored NAR files. */
import type { Compression } from '../protocol/index.js'

/** Where an admitted path's NAR can be fetched from, in priority order. */
export interface SourceRecord {
  readonly upstream: string
  /** Absolute URL of the compressed NAR at that upstream. */
  readonly url: string
  readonly compression: Compression
  readonly fileHash?: string
  readonly fileSize?: number
}

/** An admitted narinfo as the index keeps it. */
export interface NarInfoRecord {
  /** The admitted narinfo in Nix's format (upstream URL; verified trusted signatures only). */
  readonly narinfo: string
  readonly sources: readonly SourceRecord[]
  /** Index of the rule that admitted it, and the key names that counted. */
  readonly rule: number
  readonly signers: readonly string[]
  readonly admittedAt: number
  /** Who supplied it: an upstream name, `push`, or `import`. */
  readonly origin: string
}

/** An admitted realisation (`realisations/<id>.doi`) as the index keeps it. */
export interface RealisationRecord {
  /** The realisation in Nix's JSON, with the verified trusted signatures only. */
  readonly realisation: string
  /** An upstream name, or `push`. */
  readonly origin: string
  /** Index of the rule that admitted it (-1 for a push), and the key names that counted. */
  readonly rule: number
  readonly signers: readonly string[]
  readonly admittedAt: number
}

/** A stored NAR file. Its name is `<NarHash nix32>.nar<ext>`. */
export interface NarFileRecord {
  readonly fileHash: string
  readonly fileSize: number
  readonly narHash: string
  readonly narSize: number
  readonly compression: Compression
  readonly storedAt: number
}
