/** How an upstream judges its answers: which statuses mean "absent", which are worth a retry, whether a narinfo will do. */
import { NarthexError } from '../errors.js'
import { parseNarInfo, type NarInfo } from '../protocol/index.js'
import { isUndiciTimeout } from '../undici.js'

/** Statuses that mean the upstream has no such file (S3 answers 403 for a missing key when listing is not allowed). */
export const ABSENT_STATUSES: ReadonlySet<number> = new Set([404, 410, 403])

/** True for statuses another attempt may fix (timeouts, throttling, most 5xx). */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505 && status !== 511)
}

/** True for an error that means the upstream took too long (undici's timeouts, the SDK's, a deadline signal). */
export function isTimeout(err: unknown): boolean {
  return isUndiciTimeout(err) || (err as Error)?.name === 'TimeoutError'
}

/** Waits before retry `attempt + 1`: 100 ms, 200 ms, 400 ms, … */
export const backoff = (attempt: number): Promise<void> => new Promise((r) => setTimeout(r, 100 * 2 ** attempt))

/** ` (reason)` after a status in messages, when the transport gave one. */
export const because = (reason: string | undefined): string => (reason ? ` (${reason})` : '')

/**
 * Parses the narinfo upstream `name` served for `hashPart`.
 * @throws NarthexError UPSTREAM_INVALID when it is malformed or for another store path.
 */
export function parseAnswer(name: string, text: string, hashPart: string): NarInfo {
  let info: NarInfo
  try {
    info = parseNarInfo(text)
  } catch (err) {
    throw new NarthexError('UPSTREAM_INVALID', `upstream ${name} served a malformed narinfo for ${hashPart}: ${(err as Error).message}`, {
      cause: err,
      detail: { upstream: name },
    })
  }
  if (info.storePath.hashPart !== hashPart) {
    throw new NarthexError('UPSTREAM_INVALID', `upstream ${name} answered ${hashPart}.narinfo with another store path`, {
      detail: { upstream: name },
    })
  }
  return info
}
