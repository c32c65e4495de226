/**
 * The one place that turns errors into HTTP responses. A 5xx body is only the
 * status phrase (details go to the log); anything that is not a NarthexError is
 * a logged 500.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { HTTP_STATUS, NarthexError } from '../errors.js'

/** Sends a plain-text status response, unless headers already went out (then the socket is closed). */
export function respondStatus(res: ServerResponse, status: number, body?: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const text = `${body ?? STATUS_CODES[status] ?? 'Error'}\n`
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(res.req.method === 'HEAD' ? undefined : text)
}

/** Answers with the status of `err`'s code; 4xx bodies carry the message, 5xx only the phrase. */
export function respondError(res: ServerResponse, err: unknown, log: Logger): void {
  if (err instanceof NarthexError) {
    const status = HTTP_STATUS[err.code]
    if (status >= 500) log.error({ code: err.code, err: err.message, detail: err.detail, url: res.req.url }, 'request failed')
    const headers: Record<string, string> = status === 503 ? { 'retry-after': '10' } : {}
    respondStatus(res, status, status < 500 ? err.message : undefined, headers)
    return
  }
  log.error({ err, url: res.req.url }, 'unexpected error')
  respondStatus(res, 500)
}
