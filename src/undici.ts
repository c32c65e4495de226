/**
 * undici, loaded at its first use rather than at start-up: evaluating it (its
 * fetch, WebSocket, cookie and cache modules come with its index) is tens of
 * milliseconds a start that serves from the store does not need before it
 * answers. The CLI loads it soon after it listens (see cli/app.ts); a cluster worker,
 * which needs it to reach the core, before.
 */
import type * as Undici from 'undici'

let loading: Promise<typeof Undici> | undefined

/** undici's exports, evaluated on the first call. */
export function loadUndici(): Promise<typeof Undici> {
  loading ??= import('undici')
  return loading
}

/** undici's timeout errors, by their stable codes (no need to load undici to recognise one). */
const TIMEOUT_CODES: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** True for undici's headers, body and connect timeouts. */
export function isUndiciTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && TIMEOUT_CODES.has(code)
}
