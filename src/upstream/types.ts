/** What an upstream is given and what it answers: its settings, narinfo look-ups, NAR downloads, health. */
import type { Readable } from 'node:stream'
import type { NarInfo } from '../protocol/index.js'
import type { CredentialSource } from './credentials.js'

/** Settings of one upstream (the config's `upstreams[]` entry). */
export interface UpstreamOptions extends CredentialSource {
  readonly name: string
  /** `http(s)://…`, or `s3://bucket?region=…&endpoint=…&profile=…` (Nix's syntax). */
  readonly url: string
  readonly timeoutMs: number
  readonly connectTimeoutMs?: number | undefined
  readonly retries: number
  readonly maxConnections: number
  readonly minBytesPerSecond: number
  /** Window over which `minBytesPerSecond` is judged. */
  readonly speedWindowMs?: number
  readonly failureThreshold: number
  readonly downForMs: number
}

/** What an upstream said about a narinfo. */
export type NarInfoLookup = { readonly kind: 'present'; readonly info: NarInfo } | { readonly kind: 'absent' }

/** An open NAR download. The caller must consume or destroy `body`. */
export interface NarResponse {
  readonly body: Readable
  readonly contentLength: number | undefined
}

/** What else an upstream tells its owner. */
export interface UpstreamHooks {
  /** The upstream refused narthex's credentials (or demanded some): called once per change into that state. */
  readonly onCredentialsRejected?: (upstream: string, status: number, message: string) => void
}

/** Health of an upstream, for the status page and metrics. */
export interface UpstreamHealth {
  readonly name: string
  /** The URL, or the bucket's location for an S3 upstream: never a secret. */
  readonly url: string
  readonly down: boolean
  readonly consecutiveFailures: number
  /** The last answer was a 401/403 to narthex's credentials (or to their absence). */
  readonly credentialsRejected: boolean
}
