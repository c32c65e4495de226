/**
 * What a failure while fetching, writing or verifying a NAR file means, as a
 * {@link NarthexError}. Downloads, the verification threads, `narthex verify`
 * and pushes all classify through {@link classifyNarError}, so the same fault
 * gets the same code everywhere: a disk fault is never taken for corrupt data,
 * nor a shutdown for a bad upstream.
 */
import { NarthexError } from '../errors.js'

/** Where the bytes that failed came from or went to, for the error's code and message. */
export interface NarErrorContext {
  /** The NAR file being read or written. */
  readonly file?: string | undefined
  /** The upstream the bytes come from, when they come from one. */
  readonly upstream?: string | undefined
  /**
   * The work's own signal: once it is aborted, every later error is a
   * consequence of the abort and is classified as its reason.
   */
  readonly signal?: AbortSignal | undefined
}

// errno codes of the file system: the disk failed, not the data.
const DISK_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'ENOENT', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE'])

/**
 * The {@link NarthexError} that `err` stands for:
 * - after `context.signal` aborted, or for an AbortError: the abort's reason,
 *   or SHUTTING_DOWN when it gave none (narthex aborts a NAR's work only when
 *   it stops);
 * - a NarthexError: itself;
 * - file system errors: STORE_IO;
 * - the HTTP client's errors: UPSTREAM_TIMEOUT when the body stalled,
 *   UPSTREAM_UNAVAILABLE when the connection broke;
 * - anything else: NAR_INVALID, since the decoder libraries (lzma-native,
 *   zstd-napi, zlib) fail with their own errors on corrupt input.
 */
export function classifyNarError(err: unknown, context: NarErrorContext = {}): NarthexError {
  const { signal, upstream, file } = context
  if (signal?.aborted) return abortReason(signal.reason)
  if (err instanceof NarthexError) return err
  const e = err as (Error & { code?: unknown; cause?: unknown }) | undefined
  const message = e?.message ?? String(err)
  const code = typeof e?.code === 'string' ? e.code : undefined
  const detail = upstream !== undefined ? { upstream } : undefined
  // undici names its RequestAbortedError 'AbortError' too: without our signal aborted, the
  // request was cut on the upstream's side.
  if (e?.name === 'AbortError' && code !== 'UND_ERR_ABORTED') return abortReason(e.cause)
  if (code !== undefined && DISK_ERRORS.has(code)) {
    return new NarthexError('STORE_IO', `disk error (${code})${file ? ` on ${file}` : ''}: ${message}`, { cause: err })
  }
  const from = upstream !== undefined ? `upstream ${upstream}` : 'the upstream'
  if (code === 'UND_ERR_BODY_TIMEOUT') {
    return new NarthexError('UPSTREAM_TIMEOUT', `${from} stopped sending the NAR`, { cause: err, detail })
  }
  if (code?.startsWith('UND_ERR') || code === 'ECONNRESET' || message === 'terminated') {
    return new NarthexError('UPSTREAM_UNAVAILABLE', `download from ${from} broke off: ${message}`, { cause: err, detail })
  }
  const what = upstream !== undefined ? `the NAR from upstream ${upstream}` : file ? `the NAR file ${file}` : 'the NAR'
  return new NarthexError('NAR_INVALID', `${what} is corrupt: ${message}`, { cause: err, detail })
}

function abortReason(reason: unknown): NarthexError {
  if (reason instanceof NarthexError) return reason
  return new NarthexError('SHUTTING_DOWN', 'stopped before the NAR was verified', { cause: reason })
}

/**
 * True when a verification failed because this machine cannot check the file
 * (no decoder for its compression), not because the file is bad: such a file
 * is neither trusted nor thrown away.
 */
export function isUncheckable(err: NarthexError): boolean {
  return err.code === 'COMPRESSION_UNSUPPORTED'
}
