/**
 * How an upstream's files are fetched: over HTTP(S) from a binary cache
 * server, or from an S3 bucket. The upstream around a transport keeps the
 * retries, health and speed checks, so both kinds behave alike to narthex.
 */
import type { Readable } from 'node:stream'
import { NarthexError } from '../errors.js'
import { formatS3Location, parseS3Url } from '../protocol/index.js'
import type { CredentialSource } from './credentials.js'
import { HttpTransport, type HttpTransportOptions } from './http-transport.js'
import { S3Transport } from './s3-transport.js'

/** One answer of a transport, shaped like an HTTP response whatever the transport. */
export interface TransportResponse {
  /** The HTTP status, or for S3 the status its error maps to (404 missing key, 403 refused credentials, 5xx). */
  readonly statusCode: number
  /** The body's length when the answer gave it. */
  readonly contentLength: number | undefined
  /** The body, streamed; consume it, destroy it or call {@link TransportResponse.dump}. */
  readonly body: Readable
  /** Why, in the upstream's own words (an S3 error code), for messages; undefined over HTTP. */
  readonly reason?: string | undefined
  /** Reads and drops the body so its connection can serve the next request. */
  dump(): Promise<void>
}

/** Fetches files of one upstream binary cache. */
export interface Transport {
  /** Where the upstream is, for the status page and logs: never a secret. */
  readonly location: string
  /** True when narthex presents credentials of its own choosing (a 403 then means "rejected", not "absent"). */
  readonly hasCredentials: boolean
  /** What to tell the operator when the upstream refuses or demands credentials. */
  credentialsAdvice(present: boolean): string
  /**
   * Reads the credentials again (SIGHUP). On an error the credentials held so far stay in use.
   * @returns warnings for the log.
   * @throws NarthexError CONFIG_INVALID when a credentials file cannot be read or parsed.
   */
  reloadCredentials(): readonly string[]
  /** The request path of `relPath` (`<hash>.narinfo`, `log/…`) under the cache root. */
  pathOf(relPath: string): string
  /**
   * Resolves a narinfo's `URL` field: relative to the cache root, or absolute
   * but on this upstream (same origin, or same bucket), never elsewhere.
   * @returns the absolute URL, for {@link Transport.pathOfUrl}.
   * @throws NarthexError UPSTREAM_INVALID
   */
  resolveUrl(url: string): string
  /**
   * The request path of an absolute URL {@link Transport.resolveUrl} returned.
   * @throws NarthexError UPSTREAM_INVALID when the URL is not on this upstream.
   */
  pathOfUrl(url: string): string
  /**
   * Sends one request; resolves with any status the upstream answered, rejects
   * only when there was no answer (connection error, timeout, abort).
   */
  request(path: string, method: 'GET' | 'HEAD', signal: AbortSignal): Promise<TransportResponse>
  /** Closes connections. */
  close(): Promise<void>
}

/** True when `url` names an S3 bucket rather than an HTTP(S) cache. */
export function isS3Url(url: string): boolean {
  return /^s3:\/\//i.test(url)
}

/** How logs, the status page and `explain` show an upstream's URL: an s3:// one in its normal form, never with secrets. */
export function upstreamLocation(url: string): string {
  if (!isS3Url(url)) return url
  try {
    return formatS3Location(parseS3Url(url))
  } catch {
    return url
  }
}

/**
 * The transport for an upstream's URL: S3 for `s3://`, else HTTP(S).
 * @throws NarthexError CONFIG_INVALID for a malformed s3:// URL, or one given netrc/bearer credentials.
 */
export function transportFor(options: HttpTransportOptions & CredentialSource): Transport {
  return isS3Url(options.url) ? s3Transport(options) : new HttpTransport({ ...options, url: options.url.replace(/\/+$/, '') })
}

/** The transport of an s3:// upstream; credentials files are an HTTP matter. */
function s3Transport(options: HttpTransportOptions): S3Transport {
  let loc
  try {
    loc = parseS3Url(options.url)
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `upstream ${options.name}: ${(err as Error).message}`, { cause: err })
  }
  if (options.netrcFile !== undefined || options.bearerTokenFile !== undefined) {
    throw new NarthexError('CONFIG_INVALID', `upstream ${options.name}: an s3:// upstream takes no netrcFile or bearerTokenFile; its credentials come from the AWS chain (environment, shared credentials file, profile)`)
  }
  return new S3Transport(loc, options)
}
