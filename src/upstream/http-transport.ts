/**
 * The transport to an HTTP(S) binary cache: an undici Pool bound to the
 * upstream's origin, presenting the credentials from its netrc or bearer file.
 */
import type { Pool } from 'undici'
import { NarthexError } from '../errors.js'
import { loadCredentials, type CredentialSource } from './credentials.js'
import type { Transport, TransportResponse } from './transport.js'
import { loadPool } from '../undici.js'

/** What {@link HttpTransport} needs of an upstream's settings. */
export interface HttpTransportOptions extends CredentialSource {
  readonly name: string
  /** The cache root, without a trailing slash. */
  readonly url: string
  readonly timeoutMs: number
  readonly connectTimeoutMs?: number | undefined
  readonly maxConnections: number
}

/** An HTTP(S) upstream's transport. */
export class HttpTransport implements Transport {
  readonly location: string
  readonly #name: string
  readonly #origin: string
  readonly #basePath: string
  /** Made at the first request (undici is loaded then, see undici.ts). */
  #pool: Promise<Pool> | undefined
  #closed = false
  readonly #options: HttpTransportOptions
  #authorization: string | undefined

  /** Connects lazily; the credentials are read by the first {@link HttpTransport.reloadCredentials}. */
  constructor(options: HttpTransportOptions) {
    this.#options = options
    this.#name = options.name
    this.location = options.url
    const u = new URL(options.url)
    this.#origin = u.origin
    this.#basePath = u.pathname.replace(/\/+$/, '')
  }

  get hasCredentials(): boolean {
    return this.#authorization !== undefined
  }

  credentialsAdvice(present: boolean): string {
    return present ? 'credentials rejected (check its netrcFile or bearerTokenFile)' : 'it demands credentials (set netrcFile or bearerTokenFile)'
  }

  reloadCredentials(): readonly string[] {
    const loaded = loadCredentials(this.#name, this.location, this.#options)
    this.#authorization = loaded.authorization
    return loaded.warnings
  }

  pathOf(relPath: string): string {
    return `${this.#basePath}/${relPath}`
  }

  resolveUrl(url: string): string {
    let resolved: URL
    try {
      resolved = new URL(url, `${this.location}/`)
    } catch (err) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.#name} gave an invalid NAR URL ${JSON.stringify(url)}`, { cause: err })
    }
    if (resolved.origin !== this.#origin) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.#name} points a NAR at another host (${resolved.origin})`, {
        detail: { upstream: this.#name },
      })
    }
    return resolved.href
  }

  pathOfUrl(url: string): string {
    const target = new URL(url)
    if (target.origin !== this.#origin) throw new NarthexError('UPSTREAM_INVALID', `NAR URL ${url} is not on upstream ${this.#name}`)
    return target.pathname + target.search
  }

  async request(path: string, method: 'GET' | 'HEAD', signal: AbortSignal): Promise<TransportResponse> {
    // The pool is bound to this upstream's origin and never follows redirects, so the
    // credentials reach no other host.
    const headers: Record<string, string> = { 'user-agent': 'narthex' }
    if (this.#authorization !== undefined) headers.authorization = this.#authorization
    const res = await (await this.#connections()).request({ path, method, signal, headers })
    const len = Number(res.headers['content-length'])
    return { statusCode: res.statusCode, contentLength: Number.isSafeInteger(len) ? len : undefined, body: res.body, dump: () => res.body.dump() }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#pool) await (await this.#pool).close()
  }

  #connections(): Promise<Pool> {
    // As a closed Pool does: no new connections once closed.
    if (this.#closed) return Promise.reject(new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.#name}: its connections are closed`))
    const o = this.#options
    this.#pool ??= loadPool().then(
      (Pool) =>
        new Pool(this.#origin, {
          connections: o.maxConnections,
          connect: { timeout: o.connectTimeoutMs ?? Math.min(o.timeoutMs, 10_000) },
          headersTimeout: o.timeoutMs,
          bodyTimeout: o.timeoutMs,
          keepAliveTimeout: 30_000,
        }),
    )
    return this.#pool
  }
}
