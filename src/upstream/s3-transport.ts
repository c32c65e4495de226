/**
 * The transport to a binary cache in an S3 bucket (`s3://bucket?region=…`, as
 * `nix copy --to` writes one): GetObject and HeadObject through the AWS SDK,
 * their errors turned into the HTTP statuses the upstream already knows how to
 * judge. Credentials come only from the SDK's standard chain (environment,
 * shared credentials file, profile); narthex never sees or logs them.
 */
import { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { S3Client } from '@aws-sdk/client-s3'
import { NarthexError } from '../errors.js'
import { formatS3Location, type S3Location } from '../protocol/index.js'
import { createS3Client, loadS3Sdk, objectKey } from '../s3-client.js'
import type { Transport, TransportResponse } from './transport.js'

/** What {@link S3Transport} needs of an upstream's settings. */
export interface S3TransportOptions {
  readonly name: string
  readonly timeoutMs: number
  readonly connectTimeoutMs?: number | undefined
  readonly maxConnections: number
}

/** The status an S3 error stands for, and its code for messages. */
export interface S3ErrorStatus {
  readonly status: number
  readonly reason: string
}

const MISSING = new Set(['NoSuchKey', 'NotFound'])
const REFUSED = new Set(['AccessDenied', 'Forbidden', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired'])
const THROTTLED = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'RequestThrottled', 'TooManyRequestsException'])

/**
 * Maps an error thrown by the SDK to the status an HTTP cache would have
 * answered, so retries, health and credential handling work as for HTTP:
 * a missing key is 404, refused credentials 403, no credentials found 401,
 * throttling 503, a missing bucket 502 (a broken upstream, not an absent
 * path), other service errors their own status.
 * @returns undefined when there was no answer (connection error, timeout, abort).
 */
export function s3ErrorStatus(err: unknown): S3ErrorStatus | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const rawName = (err as { name?: unknown }).name
  const name = typeof rawName === 'string' ? rawName : ''
  const status = (err as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode
  if (name === 'CredentialsProviderError') return { status: 401, reason: name }
  if (MISSING.has(name)) return { status: 404, reason: name }
  if (REFUSED.has(name)) return { status: 403, reason: name }
  if (THROTTLED.has(name)) return { status: 503, reason: name }
  if (name === 'NoSuchBucket') return { status: 502, reason: name }
  if (typeof status === 'number' && status >= 300) return { status, reason: name || `HTTP ${status}` }
  return undefined
}

/** An S3 upstream's transport. */
export class S3Transport implements Transport {
  readonly location: string
  readonly #loc: S3Location
  readonly #name: string
  readonly #options: S3TransportOptions
  #client: Promise<S3Client> | undefined
  /** Clients replaced by a reload; in-flight downloads may still use them, so they close with the transport. */
  readonly #retired: Promise<S3Client>[] = []
  #credentialsMissing = false

  /** Loads the SDK and makes the client on the first request. */
  constructor(loc: S3Location, options: S3TransportOptions) {
    this.#loc = loc
    this.#name = options.name
    this.#options = options
    this.location = formatS3Location(loc)
  }

  /** Requests are always signed, with what the AWS chain finds; false once it found nothing. */
  get hasCredentials(): boolean {
    return !this.#credentialsMissing
  }

  credentialsAdvice(present: boolean): string {
    const profile = this.#loc.profile !== undefined ? `profile ${this.#loc.profile} of ` : ''
    return present
      ? `credentials rejected (check the AWS credentials narthex runs with: AWS_* environment variables, or ${profile}the shared credentials file)`
      : `it demands credentials and the AWS chain found none (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ${profile}the shared credentials file)`
  }

  /** The SDK caches what its chain found: a new client reads the environment and files afresh. */
  reloadCredentials(): readonly string[] {
    if (this.#client) this.#retired.push(this.#client)
    this.#client = undefined
    this.#credentialsMissing = false
    return []
  }

  pathOf(relPath: string): string {
    return objectKey(this.#loc, relPath)
  }

  resolveUrl(url: string): string {
    return `s3://${this.#loc.bucket}/${encodeKey(this.#keyOf(url, `s3://${this.#loc.bucket}/${encodeKey(this.#loc.prefix)}`))}`
  }

  pathOfUrl(url: string): string {
    return this.#keyOf(url, undefined)
  }

  /**
   * The object key a URL names. URL origins mean nothing for s3:// (the origin
   * of every such URL is "null"), so the bucket is compared by name: a hostile
   * narinfo cannot point narthex at another bucket, host or scheme.
   */
  #keyOf(url: string, base: string | undefined): string {
    const invalid = (why: string, cause?: unknown) =>
      new NarthexError('UPSTREAM_INVALID', `upstream ${this.#name} gave an invalid NAR URL ${JSON.stringify(url)}: ${why}`, { cause, detail: { upstream: this.#name } })
    let resolved: URL
    try {
      resolved = new URL(url, base)
    } catch (err) {
      throw invalid('not a URL', err)
    }
    if (resolved.protocol !== 's3:' || resolved.host !== this.#loc.bucket || resolved.username !== '' || resolved.password !== '') {
      const where = resolved.protocol === 's3:' ? `bucket ${resolved.host}` : `${resolved.protocol}//${resolved.host}`
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.#name} points a NAR at another bucket or host (${where})`, { detail: { upstream: this.#name } })
    }
    let key: string
    try {
      key = decodeURIComponent(resolved.pathname.replace(/^\//, ''))
    } catch (err) {
      throw invalid('bad percent-encoding', err)
    }
    if (key === '' || key.endsWith('/')) throw invalid('it names no object')
    return key
  }

  #clientNow(): Promise<S3Client> {
    this.#client ??= createS3Client(this.#loc, {
      // The upstream retries itself, judging each answer; the SDK's own retries would multiply them.
      maxAttempts: 1,
      connectTimeoutMs: this.#options.connectTimeoutMs ?? Math.min(this.#options.timeoutMs, 10_000),
      requestTimeoutMs: this.#options.timeoutMs,
      maxSockets: this.#options.maxConnections,
    })
    return this.#client
  }

  async request(path: string, method: 'GET' | 'HEAD', signal: AbortSignal): Promise<TransportResponse> {
    const [client, sdk] = await Promise.all([this.#clientNow(), loadS3Sdk()])
    const input = { Bucket: this.#loc.bucket, Key: path }
    try {
      if (method === 'HEAD') {
        const out = await client.send(new sdk.HeadObjectCommand(input), { abortSignal: signal })
        return answer(200, out.ContentLength, Readable.from([]))
      }
      const out = await client.send(new sdk.GetObjectCommand(input), { abortSignal: signal })
      const body = out.Body as Readable | undefined
      if (!body) return answer(200, 0, Readable.from([]))
      // The SDK's handler ends the body when the signal aborts mid-download, as undici does.
      return answer(200, out.ContentLength, body)
    } catch (err) {
      const mapped = signal.aborted ? undefined : s3ErrorStatus(err)
      if (!mapped) throw err
      if (mapped.status === 401) this.#credentialsMissing = true
      return answer(mapped.status, undefined, Readable.from([]), mapped.reason)
    }
  }

  async close(): Promise<void> {
    const clients = [...this.#retired, ...(this.#client ? [this.#client] : [])]
    this.#client = undefined
    this.#retired.length = 0
    for (const c of await Promise.allSettled(clients)) if (c.status === 'fulfilled') c.value.destroy()
  }
}

/** Encodes a key for an s3:// URL, keeping its slashes. */
function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/')
}

function answer(statusCode: number, contentLength: number | undefined, body: Readable, reason?: string): TransportResponse {
  return {
    statusCode,
    contentLength: contentLength !== undefined && Number.isSafeInteger(contentLength) ? contentLength : undefined,
    body,
    reason,
    dump: async () => {
      body.resume()
      await finished(body).catch(() => undefined)
    },
  }
}
