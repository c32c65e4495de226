/**
 * undici, loaded at its first use rather than at start-up. Upstreams and the
 * workers' connections to the core need only its Pool and request API, which
 * {@link loadPool} takes from the three files undici's own index.js puts them
 * together from: the index also evaluates fetch, WebSocket, cookies, caches,
 * mocks and proxies, about four times the work (tens of milliseconds even from
 * the code cache). The build fails if those files move in another undici.
 */
import type * as Undici from 'undici'

let pool: Promise<typeof Undici.Pool> | undefined
let whole: Promise<typeof Undici> | undefined

/** undici's Pool, with the request API on its prototype (as undici's index.js adds it). */
export function loadPool(): Promise<typeof Undici.Pool> {
  pool ??= (async () => {
    const [{ default: Pool }, { default: Dispatcher }, { default: api }] = await Promise.all([
      import('undici/lib/dispatcher/pool.js'),
      import('undici/lib/dispatcher/dispatcher.js'),
      import('undici/lib/api/index.js'),
    ])
    Object.assign(Dispatcher.prototype, api)
    return Pool
  })()
  return pool
}

/** All of undici's exports (for `narthex audit`'s one request), evaluated on the first call. */
export function loadUndici(): Promise<typeof Undici> {
  whole ??= import('undici')
  return whole
}

/** undici's timeout errors, by their stable codes (no need to load undici to recognise one). */
const TIMEOUT_CODES: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** True for undici's headers, body and connect timeouts. */
export function isUndiciTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && TIMEOUT_CODES.has(code)
}
