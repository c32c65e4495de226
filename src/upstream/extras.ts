/**
 * Build logs and realisations: files many caches do not serve, or serve badly,
 * so fetching them never counts for or against an upstream's health.
 */
import { NarthexError } from '../errors.js'
import { readCapped } from './pace.js'
import { ABSENT_STATUSES, backoff, because, isTimeout, isTransientStatus } from './answers.js'
import type { Transport } from './transport.js'
import type { NarResponse } from './upstream.js'

/** What the extras need of their upstream. */
export interface ExtrasContext {
  readonly name: string
  readonly transport: Transport
  readonly timeoutMs: number
  readonly retries: number
  /** Throws when the upstream is marked down. */
  checkUp(): void
  /** The error for a credentials rejection, or undefined when `status` is none. */
  rejection(status: number, what: string): NarthexError | undefined
}

/** GETs `relPath` under the cache root, leaving the upstream's health alone. */
export async function openExtra(ctx: ExtrasContext, relPath: string, signal?: AbortSignal): Promise<NarResponse> {
  ctx.checkUp()
  const path = ctx.transport.pathOf(relPath)
  const what = relPath
  for (let attempt = 0; ; attempt++) {
    let status: number
    let reason: string | undefined
    try {
      const res = await ctx.transport.request(path, 'GET', signal ?? new AbortController().signal)
      if (res.statusCode === 200) return { body: res.body, contentLength: res.contentLength }
      await res.dump()
      status = res.statusCode
      reason = res.reason
    } catch (err) {
      if (signal?.aborted) throw err
      if (isTimeout(err)) {
        throw new NarthexError('UPSTREAM_TIMEOUT', `upstream ${ctx.name} did not answer for ${what} within ${ctx.timeoutMs} ms`, {
          cause: err,
          detail: { upstream: ctx.name },
        })
      }
      if (attempt < ctx.retries) {
        await backoff(attempt)
        continue
      }
      throw new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${ctx.name} could not be reached for ${what}: ${(err as Error).message}`, {
        cause: err,
        detail: { upstream: ctx.name },
      })
    }
    const rejected = ctx.rejection(status, what)
    if (rejected) throw rejected
    if (ABSENT_STATUSES.has(status)) throw new NarthexError('NOT_FOUND', `upstream ${ctx.name} has no ${what} (${status})`, { detail: { upstream: ctx.name } })
    if (isTransientStatus(status) && attempt < ctx.retries) {
      await backoff(attempt)
      continue
    }
    throw new NarthexError('UPSTREAM_UNAVAILABLE', `upstream ${ctx.name} answered ${status}${because(reason)} for ${what}`, { detail: { upstream: ctx.name, status } })
  }
}

/**
 * Fetches the realisation `realisations/<id>.doi` within `timeoutMs`.
 * @returns the file's text, or undefined when the upstream has none.
 */
export async function fetchRealisation(ctx: ExtrasContext, id: string, maxBytes: number, signal?: AbortSignal): Promise<string | undefined> {
  const deadline = AbortSignal.timeout(ctx.timeoutMs)
  let res: NarResponse
  try {
    res = await openExtra(ctx, `realisations/${id}.doi`, signal ? AbortSignal.any([signal, deadline]) : deadline)
  } catch (err) {
    if (err instanceof NarthexError && err.code === 'NOT_FOUND') return undefined
    if (deadline.aborted && !signal?.aborted) {
      throw new NarthexError('UPSTREAM_TIMEOUT', `upstream ${ctx.name} did not answer for realisation ${id}`, { cause: err, detail: { upstream: ctx.name } })
    }
    throw err
  }
  return readCapped(res.body, maxBytes, ctx.name, 'realisation')
}
