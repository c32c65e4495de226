/**
 * One upstream binary cache, reached over an undici Pool: narinfo look-ups with
 * a deadline and limited retries, NAR downloads with header/idle timeouts, and
 * a simple health state so a dead upstream fails fast instead of stalling every
 * request for its full timeout.
 */
import type { Readable } from 'node:stream'
import { Pool, errors as undiciErrors, type Dispatcher } from 'undici'
import { NarthexError } from '../errors.js'
import { MAX_NARINFO_BYTES, parseNarInfo, type NarInfo } from '../protocol/index.js'
import { loadCredentials, type CredentialSource } from './credentials.js'
import { readCapped, watchSpeed, type SpeedWatch } from './pace.js'

/** Settings of one upstream (the config's `upstreams[]` entry). */
export interface UpstreamOptions extends CredentialSource {
  readonly name: string
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
  readonly url: string
  readonly down: boolean
  readonly consecutiveFailures: number
  /** The last answer was a 401/403 to narthex's credentials (or to their absence). */
  readonly credentialsRejected: boolean
}

const ABSENT_STATUSES = new Set([404, 410, 403])

function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505 && status !== 511)
}

function isTimeout(err: unknown): boolean {
  return (
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError ||
    err instanceof undiciErrors.ConnectTimeoutError ||
    (err as Error)?.name === 'TimeoutError'
  )
}

/** Waits before retry `attempt + 1`: 100 ms, 200 ms, 400 ms, … */
const backoff = (attempt: number) => new Promise((r) => setTimeout(r, 100 * 2 ** attempt))

/** One upstream binary cache. */
export class Upstream {
  readonly name: string
  readonly baseUrl: string
  readonly #origin: string
  readonly #basePath: string
  readonly #pool: Pool
  readonly #options: UpstreamOptions
  readonly #hooks: UpstreamHooks
  #failures = 0
  #downUntil = 0
  #authorization: string | undefined
  #credentialsRejected = false
  /** Warnings from loading the credentials (a secret file readable by others, no netrc entry). */
  credentialWarnings: readonly string[] = []

  /** @throws NarthexError CONFIG_INVALID when a credentials file cannot be read or parsed. */
  constructor(options: UpstreamOptions, hooks: UpstreamHooks = {}) {
    this.#options = options
    this.#hooks = hooks
    this.name = options.name
    this.baseUrl = options.url.replace(/\/+$/, '')
    const u = new URL(this.baseUrl)
    this.#origin = u.origin
    this.#basePath = u.pathname.replace(/\/+$/, '')
    this.#pool = new Pool(this.#origin, {
      connections: options.maxConnections,
      connect: { timeout: options.connectTimeoutMs ?? Math.min(options.timeoutMs, 10_000) },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      keepAliveTimeout: 30_000,
    })
    this.reloadCredentials()
  }

  /** True when narthex presents credentials to this upstream. */
  get hasCredentials(): boolean {
    return this.#authorization !== undefined
  }

  /**
   * Reads the credentials files again (at start and on SIGHUP). On an error the
   * credentials held so far stay in use.
   * @returns warnings for the log.
   * @throws NarthexError CONFIG_INVALID when a file cannot be read or parsed.
   */
  reloadCredentials(): readonly string[] {
    const loaded = loadCredentials(this.name, this.baseUrl, this.#options)
    this.#authorization = loaded.authorization
    this.#credentialsRejected = false
    this.credentialWarnings = loaded.warnings
    return loaded.warnings
  }

  /** True while the upstream is considered down after repeated failures. */
  get isDown(): boolean {
    return Date.now() < this.#downUntil
  }

  /** Health for the status page and metrics. */
  health(): UpstreamHealth {
    return { name: this.name, url: this.baseUrl, down: this.isDown, consecutiveFailures: this.#failures, credentialsRejected: this.#credentialsRejected }
  }

  #succeeded(): void {
    this.#failures = 0
    this.#downUntil = 0
    this.#credentialsRejected = false
  }

  /**
   * A 401, or a 403 to credentials, is a configuration problem, not an absent
   * path: never 404 to clients. (A 403 without credentials stays "absent": S3
   * answers it for a missing key when listing is not allowed.)
   */
  #isRejection(status: number): boolean {
    return status === 401 || (status === 403 && this.#authorization !== undefined)
  }

  /** The error for a rejection; it does not mark the upstream down (retrying cannot help, and the reason would be lost). */
  #rejected(status: number, what: string): NarthexError {
    const message = this.#authorization
      ? `upstream ${this.name} answered ${status} for ${what}: credentials rejected (check its netrcFile or bearerTokenFile)`
      : `upstream ${this.name} answered ${status} for ${what}: it demands credentials (set netrcFile or bearerTokenFile)`
    if (!this.#credentialsRejected) this.#hooks.onCredentialsRejected?.(this.name, status, message)
    this.#credentialsRejected = true
    return new NarthexError('UPSTREAM_UNAVAILABLE', message, { detail: { upstream: this.name, status, reason: 'UNAUTHORIZED' } })
  }

  #failed(): void {
    this.#failures++
    if (this.#failures >= this.#options.failureThreshold) this.#downUntil = Date.now() + this.#options.downForMs
  }

  #checkUp(): void {
    if (this.isDown) {
      throw new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} is marked down after repeated failures`, {
        detail: { upstream: this.name },
      })
    }
  }

  /**
   * Resolves a narinfo `URL` against this upstream. Relative URLs are taken
   * relative to the cache root; absolute ones must stay on the same origin, so a
   * hostile narinfo cannot send narthex to another host.
   * @throws NarthexError UPSTREAM_INVALID
   */
  resolveUrl(url: string): string {
    let resolved: URL
    try {
      resolved = new URL(url, `${this.baseUrl}/`)
    } catch (err) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.name} gave an invalid NAR URL ${JSON.stringify(url)}`, { cause: err })
    }
    if (resolved.origin !== this.#origin) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.name} points a NAR at another host (${resolved.origin})`, {
        detail: { upstream: this.name },
      })
    }
    return resolved.href
  }

  async #request(path: string, method: 'GET' | 'HEAD', signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    // The pool is bound to this upstream's origin and never follows redirects, so the
    // credentials reach no other host.
    const headers: Record<string, string> = { 'user-agent': 'narthex' }
    if (this.#authorization !== undefined) headers.authorization = this.#authorization
    return this.#pool.request({ path, method, signal, headers })
  }

  /**
   * Looks up `<hashPart>.narinfo`. Absent (404/403/410) is an answer; anything
   * that prevents an answer throws.
   * @throws NarthexError UPSTREAM_TIMEOUT past `timeoutMs`, UPSTREAM_UNAVAILABLE on
   *   connection errors and 5xx (after `retries` more attempts), UPSTREAM_INVALID
   *   on an oversized or malformed narinfo or one for another store path.
   */
  async fetchNarInfo(hashPart: string, signal?: AbortSignal): Promise<NarInfoLookup> {
    this.#checkUp()
    const path = `${this.#basePath}/${hashPart}.narinfo`
    for (let attempt = 0; ; attempt++) {
      const deadline = AbortSignal.timeout(this.#options.timeoutMs)
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline
      try {
        const res = await this.#request(path, 'GET', combined)
        if (this.#isRejection(res.statusCode)) {
          await res.body.dump()
          throw this.#rejected(res.statusCode, `${hashPart}.narinfo`)
        }
        if (ABSENT_STATUSES.has(res.statusCode)) {
          await res.body.dump()
          this.#succeeded()
          return { kind: 'absent' }
        }
        if (res.statusCode !== 200) {
          await res.body.dump()
          const verdict = this.#onStatus(res.statusCode, attempt, `${hashPart}.narinfo`)
          if (verdict === 'retry') {
            await backoff(attempt)
            continue
          }
          throw verdict
        }
        const text = await readCapped(res.body, MAX_NARINFO_BYTES, this.name)
        const info = this.#parse(text, hashPart)
        this.#succeeded()
        return { kind: 'present', info }
      } catch (err) {
        if (signal?.aborted) throw err
        if (err instanceof NarthexError) throw err
        const verdict = this.#onError(err, attempt, `${hashPart}.narinfo`, deadline.aborted)
        if (verdict === 'retry') {
          await backoff(attempt)
          continue
        }
        throw verdict
      }
    }
  }

  /** After an unexpected status: retry (transient, attempts left) or the error to throw (counted against health). */
  #onStatus(status: number, attempt: number, what: string): 'retry' | NarthexError {
    if (isTransientStatus(status) && attempt < this.#options.retries) return 'retry'
    this.#failed()
    return new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} answered ${status} for ${what}`, {
      detail: { upstream: this.name, status },
    })
  }

  /** After a transport error: retry (attempts left, not a timeout) or the error to throw (counted against health). */
  #onError(err: unknown, attempt: number, what: string, deadlinePassed: boolean): 'retry' | NarthexError {
    if (isTimeout(err) || deadlinePassed) {
      this.#failed()
      return new NarthexError('UPSTREAM_TIMEOUT', `upstream ${this.name} did not answer for ${what} within ${this.#options.timeoutMs} ms`, {
        cause: err,
        detail: { upstream: this.name },
      })
    }
    if (attempt < this.#options.retries) return 'retry'
    this.#failed()
    return new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} could not be reached for ${what}: ${(err as Error).message}`, {
      cause: err,
      detail: { upstream: this.name },
    })
  }

  #parse(text: string, hashPart: string): NarInfo {
    let info: NarInfo
    try {
      info = parseNarInfo(text)
    } catch (err) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.name} served a malformed narinfo for ${hashPart}: ${(err as Error).message}`, {
        cause: err,
        detail: { upstream: this.name },
      })
    }
    if (info.storePath.hashPart !== hashPart) {
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${this.name} answered ${hashPart}.narinfo with another store path`, {
        detail: { upstream: this.name },
      })
    }
    return info
  }

  /**
   * Starts downloading a NAR from an absolute URL on this upstream.
   * @throws NarthexError NOT_FOUND when the upstream no longer has it,
   *   UPSTREAM_TIMEOUT / UPSTREAM_UNAVAILABLE when it cannot be fetched.
   */
  async openNar(url: string, signal?: AbortSignal): Promise<NarResponse> {
    this.#checkUp()
    const target = new URL(url)
    if (target.origin !== this.#origin) throw new NarthexError('UPSTREAM_INVALID', `NAR URL ${url} is not on upstream ${this.name}`)
    const path = target.pathname + target.search
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.#request(path, 'GET', signal ?? new AbortController().signal)
        if (res.statusCode === 200) {
          this.#succeeded()
          const len = Number(res.headers['content-length'])
          return { body: res.body, contentLength: Number.isSafeInteger(len) ? len : undefined }
        }
        await res.body.dump()
        if (this.#isRejection(res.statusCode)) throw this.#rejected(res.statusCode, path)
        if (ABSENT_STATUSES.has(res.statusCode)) {
          throw new NarthexError('NOT_FOUND', `upstream ${this.name} no longer has ${path} (${res.statusCode})`, { detail: { upstream: this.name } })
        }
        const verdict = this.#onStatus(res.statusCode, attempt, path)
        if (verdict === 'retry') {
          await backoff(attempt)
          continue
        }
        throw verdict
      } catch (err) {
        if (err instanceof NarthexError || signal?.aborted) throw err
        const verdict = this.#onError(err, attempt, path, false)
        if (verdict === 'retry') {
          await backoff(attempt)
          continue
        }
        throw verdict
      }
    }
  }

  /**
   * Starts fetching the build log `/log/<drvName>` (`nix log`). Logs are an
   * optional extra many caches do not serve well, so what happens here never
   * counts for or against the upstream's health: a broken log endpoint must not
   * mark the upstream down for narinfos and NARs. An upstream already marked
   * down is not asked.
   * @throws NarthexError NOT_FOUND when the upstream has no such log,
   *   UPSTREAM_TIMEOUT / UPSTREAM_UNAVAILABLE when it cannot be fetched.
   */
  async openLog(drvName: string, signal?: AbortSignal): Promise<NarResponse> {
    return this.#openExtra(`log/${drvName}`, signal)
  }

  /**
   * Looks up the realisation `realisations/<id>.doi` (ca-derivations). Like
   * logs, realisations are an extra many caches do not serve, so the answer
   * never counts for or against the upstream's health.
   * @returns the file's text, or undefined when the upstream has none.
   * @throws NarthexError UPSTREAM_TIMEOUT / UPSTREAM_UNAVAILABLE when it cannot be asked,
   *   UPSTREAM_INVALID when the file is larger than `maxBytes`.
   */
  async fetchRealisation(id: string, maxBytes: number, signal?: AbortSignal): Promise<string | undefined> {
    const deadline = AbortSignal.timeout(this.#options.timeoutMs)
    let res: NarResponse
    try {
      res = await this.#openExtra(`realisations/${id}.doi`, signal ? AbortSignal.any([signal, deadline]) : deadline)
    } catch (err) {
      if (err instanceof NarthexError && err.code === 'NOT_FOUND') return undefined
      if (deadline.aborted && !signal?.aborted) {
        throw new NarthexError('UPSTREAM_TIMEOUT', `upstream ${this.name} did not answer for realisation ${id}`, { cause: err, detail: { upstream: this.name } })
      }
      throw err
    }
    return readCapped(res.body, maxBytes, this.name, 'realisation')
  }

  /** GETs `relPath` under the cache root, for files whose failures leave the upstream's health alone. */
  async #openExtra(relPath: string, signal?: AbortSignal): Promise<NarResponse> {
    this.#checkUp()
    const path = `${this.#basePath}/${relPath}`
    const what = relPath
    for (let attempt = 0; ; attempt++) {
      let status: number
      try {
        const res = await this.#request(path, 'GET', signal ?? new AbortController().signal)
        if (res.statusCode === 200) {
          const len = Number(res.headers['content-length'])
          return { body: res.body, contentLength: Number.isSafeInteger(len) ? len : undefined }
        }
        await res.body.dump()
        status = res.statusCode
      } catch (err) {
        if (signal?.aborted) throw err
        if (isTimeout(err)) {
          throw new NarthexError('UPSTREAM_TIMEOUT', `upstream ${this.name} did not answer for ${what} within ${this.#options.timeoutMs} ms`, {
            cause: err,
            detail: { upstream: this.name },
          })
        }
        if (attempt < this.#options.retries) {
          await backoff(attempt)
          continue
        }
        throw new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} could not be reached for ${what}: ${(err as Error).message}`, {
          cause: err,
          detail: { upstream: this.name },
        })
      }
      if (this.#isRejection(status)) throw this.#rejected(status, what)
      if (ABSENT_STATUSES.has(status)) throw new NarthexError('NOT_FOUND', `upstream ${this.name} has no ${what} (${status})`, { detail: { upstream: this.name } })
      if (isTransientStatus(status) && attempt < this.#options.retries) {
        await backoff(attempt)
        continue
      }
      throw new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} answered ${status} for ${what}`, { detail: { upstream: this.name, status } })
    }
  }

  /** Watches a download's pace against `minBytesPerSecond` (see {@link SpeedWatch}). */
  watchSpeed(onSlow: (err: NarthexError) => void): SpeedWatch {
    return watchSpeed(this.#options.minBytesPerSecond, this.#options.speedWindowMs ?? 30_000, this.name, onSlow)
  }

  /** Counts a failed download (bad bytes, stall) against the upstream's health. */
  reportFailure(): void {
    this.#failed()
  }

  /** Closes the connection pool. */
  async close(): Promise<void> {
    await this.#pool.close()
  }
}
