/**
 * narthex's one error type. Every failure that crosses a layer boundary is a
 * {@link NarthexError} with a stable {@link ErrorCode}; the server maps codes to
 * HTTP statuses through {@link HTTP_STATUS} and nowhere else.
 */

/** Stable error codes. Never renamed: logs, metrics and tests key on them. */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'NOT_FOUND'
  | 'PAYLOAD_TOO_LARGE'
  | 'PUSH_REFUSED'
  | 'PUSH_CONFLICT'
  | 'NIX32_INVALID'
  | 'HASH_INVALID'
  | 'STORE_PATH_INVALID'
  | 'NARINFO_INVALID'
  | 'NAR_INVALID'
  | 'KEY_INVALID'
  | 'SIGNATURE_INVALID'
  | 'HASH_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'COMPRESSION_UNSUPPORTED'
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'UPSTREAM_INVALID'
  | 'STORE_IO'
  | 'CONFIG_INVALID'
  | 'SHUTTING_DOWN'

/**
 * The HTTP status each code answers with. Exhaustive on purpose: a new code does
 * not compile until it has a status. Nix reads 404 as "not in this cache" (and
 * remembers it for an hour), so only answers that are sure of absence map to 404;
 * anything that could not be found out maps to 5xx.
 */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  PUSH_REFUSED: 403,
  PUSH_CONFLICT: 409,
  NIX32_INVALID: 400,
  HASH_INVALID: 400,
  STORE_PATH_INVALID: 400,
  NARINFO_INVALID: 400,
  NAR_INVALID: 400,
  KEY_INVALID: 400,
  SIGNATURE_INVALID: 400,
  HASH_MISMATCH: 502,
  SIZE_MISMATCH: 502,
  COMPRESSION_UNSUPPORTED: 502,
  UPSTREAM_UNAVAILABLE: 503,
  UPSTREAM_TIMEOUT: 503,
  UPSTREAM_INVALID: 502,
  STORE_IO: 500,
  CONFIG_INVALID: 500,
  SHUTTING_DOWN: 503,
}

/** Extra options of a {@link NarthexError}: a cause and structured detail for logs. */
export interface NarthexErrorOptions extends ErrorOptions {
  /** Structured context (line, field, upstream, …); logged, never sent to clients. */
  detail?: Record<string, unknown>
}

/** An error with a stable code and structured detail. Tests check `code`, never the message. */
export class NarthexError extends Error {
  readonly detail: Record<string, unknown> | undefined
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: NarthexErrorOptions,
  ) {
    super(message, options)
    this.name = 'NarthexError'
    this.detail = options?.detail
  }
}

/** True when `err` is a {@link NarthexError}, optionally with the given code. */
export function isNarthexError(err: unknown, code?: ErrorCode): err is NarthexError {
  return err instanceof NarthexError && (code === undefined || err.code === code)
}
