/**
 * One upstream binary cache, reached through a transport (HTTP(S), or an S3
 * bucket for `s3://` URLs): narinfo look-ups with a deadline and limited
 * retries, NAR downloads with header/idle timeouts, and a simple health state
 * so a dead upstream fails fast instead of stalling every request for its full
 * timeout.
 */
import type { Readable } from 'node:stream'
import { NarthexError } from '../errors.js'
import { MAX_NARINFO_BYTES, type NarInfo } from '../protocol/index.js'
import type { CredentialSource } from './credentials.js'
import { fetchRealisation, openExtra, type ExtrasContext } from './extras.js'
import { ABSENT_STATUSES, backoff, because, isTimeout, isTransientStatus, parseAnswer } from './answers.js'
import { readCapped, watchSpeed, type SpeedWatch } from './pace.js'
import { transportFor, type Transport } from './transport.js'

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

/** One upstream binary cache. */
export class Upstream {
  readonly name: string
  /** The cache root (no trailing slash), or the bucket's location for an S3 upstream. */
  readonly baseUrl: string
  readonly #transport: Transport
  readonly #options: UpstreamOptions
  readonly #hooks: UpstreamHooks
  readonly #extras: ExtrasContext
  #failures = 0
  #downUntil = 0
  #credentialsRejected = false
  /** Warnings from loading the credentials (a secret file readable by others, no netrc entry). */
  credentialWarnings: readonly string[] = []

  /**
   * @throws NarthexError CONFIG_INVALID when a credentials file cannot be read
   *   or parsed, or an s3:// URL is malformed or given netrc/bearer credentials.
   */
  constructor(options: UpstreamOptions, hooks: UpstreamHooks = {}) {
    this.#options = options
    this.#hooks = hooks
    this.name = options.name
    this.#transport = transportFor(options)
    this.baseUrl = this.#transport.location
    this.#extras = {
      name: this.name,
      transport: this.#transport,
      timeoutMs: options.timeoutMs,
      retries: options.retries,
      checkUp: () => this.#checkUp(),
      rejection: (status, what) => (this.#isRejection(status) ? this.#rejected(status, what) : undefined),
    }
    this.reloadCredentials()
  }

  /** True when narthex presents credentials to this upstream. */
  get hasCredentials(): boolean {
    return this.#transport.hasCredentials
  }

  /**
   * Reads the credentials files again (at start and on SIGHUP). On an error the
   * credentials held so far stay in use.
   * @returns warnings for the log.
   * @throws NarthexError CONFIG_INVALID when a file cannot be read or parsed.
   */
  reloadCredentials(): readonly string[] {
    const warnings = this.#transport.reloadCredentials()
    this.#credentialsRejected = false
    this.credentialWarnings = warnings
    return warnings
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
    return status === 401 || (status === 403 && this.#transport.hasCredentials)
  }

  /** The error for a rejection; it does not mark the upstream down (retrying cannot help, and the reason would be lost). */
  #rejected(status: number, what: string): NarthexError {
    const message = `upstream ${this.name} answered ${status} for ${what}: ${this.#transport.credentialsAdvice(this.#transport.hasCredentials)}`
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
   * relative to the cache root; absolute ones must stay on the same origin (for
   * S3: in the same bucket), so a hostile narinfo cannot send narthex elsewhere.
   * @throws NarthexError UPSTREAM_INVALID
   */
  resolveUrl(url: string): string {
    return this.#transport.resolveUrl(url)
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
    const path = this.#transport.pathOf(`${hashPart}.narinfo`)
    for (let attempt = 0; ; attempt++) {
      const deadline = AbortSignal.timeout(this.#options.timeoutMs)
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline
      try {
        const res = await this.#transport.request(path, 'GET', combined)
        if (this.#isRejection(res.statusCode)) {
          await res.dump()
          throw this.#rejected(res.statusCode, `${hashPart}.narinfo`)
        }
        if (ABSENT_STATUSES.has(res.statusCode)) {
          await res.dump()
          this.#succeeded()
          return { kind: 'absent' }
        }
        if (res.statusCode !== 200) {
          await res.dump()
          const verdict = this.#onStatus(res.statusCode, attempt, `${hashPart}.narinfo`, res.reason)
          if (verdict === 'retry') {
            await backoff(attempt)
            continue
          }
          throw verdict
        }
        const text = await readCapped(res.body, MAX_NARINFO_BYTES, this.name)
        const info = parseAnswer(this.name, text, hashPart)
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
  #onStatus(status: number, attempt: number, what: string, reason: string | undefined): 'retry' | NarthexError {
    if (isTransientStatus(status) && attempt < this.#options.retries) return 'retry'
    this.#failed()
    return new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${this.name} answered ${status}${because(reason)} for ${what}`, {
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

  /**
   * Starts downloading a NAR from an absolute URL on this upstream.
   * @throws NarthexError NOT_FOUND when the upstream no longer has it,
   *   UPSTREAM_TIMEOUT / UPSTREAM_UNAVAILABLE when it cannot be fetched.
   */
  async openNar(url: string, signal?: AbortSignal): Promise<NarResponse> {
    this.#checkUp()
    const path = this.#transport.pathOfUrl(url)
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.#transport.request(path, 'GET', signal ?? new AbortController().signal)
        if (res.statusCode === 200) {
          this.#succeeded()
          return { body: res.body, contentLength: res.contentLength }
        }
        await res.dump()
        if (this.#isRejection(res.statusCode)) throw this.#rejected(res.statusCode, path)
        if (ABSENT_STATUSES.has(res.statusCode)) {
          throw new NarthexError('NOT_FOUND', `upstream ${this.name} no longer has ${path} (${res.statusCode})`, { detail: { upstream: this.name } })
        }
        const verdict = this.#onStatus(res.statusCode, attempt, path, res.reason)
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
    return openExtra(this.#extras, `log/${drvName}`, signal)
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
    return fetchRealisation(this.#extras, id, maxBytes, signal)
  }

  /** Watches a download's pace against `minBytesPerSecond` (see {@link SpeedWatch}). */
  watchSpeed(onSlow: (err: NarthexError) => void): SpeedWatch {
    return watchSpeed(this.#options.minBytesPerSecond, this.#options.speedWindowMs ?? 30_000, this.name, onSlow)
  }

  /** Counts a failed download (bad bytes, stall) against the upstream's health. */
  reportFailure(): void {
    this.#failed()
  }

  /** Closes the connections. */
  async close(): Promise<void> {
    await this.#transport.close()
  }
}

