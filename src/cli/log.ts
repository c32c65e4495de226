/** Logging and listen addresses, shared by the core and the worker processes (which load little else). */
import { createRequire } from 'node:module'
import { pino, type DestinationStream, type Logger } from 'pino'

/** How log lines look: `auto` is pretty on a terminal, JSON lines otherwise. */
export type LogFormat = 'auto' | 'json' | 'pretty'

// Fields that could carry a credential if a line ever included them; pino replaces their values.
const REDACT = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'token',
  '*.token',
  'tokens',
  '*.tokens',
  'password',
  '*.password',
  'secretKey',
  '*.secretKey',
]

/** `auto` resolved against the log's destination (stderr): `pretty` on a terminal. */
export function resolveLogFormat(format: LogFormat): 'json' | 'pretty' {
  if (format !== 'auto') return format
  return process.stderr.isTTY ? 'pretty' : 'json'
}

function prettyStream(): DestinationStream {
  // Loaded only for a terminal: a server logging JSON never pays for it.
  const require = createRequire(import.meta.url)
  const pretty = require('pino-pretty') as (options: Record<string, unknown>) => DestinationStream
  return pretty({ destination: 2, sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname', singleLine: true })
}

/** Creates the logger narthex uses, on stderr: JSON lines, or human-readable on a terminal. */
export function createLogger(level: string, format: LogFormat = 'auto'): Logger {
  const options = { level, base: { pid: process.pid }, redact: { paths: REDACT, censor: '[redacted]' } }
  if (resolveLogFormat(format) === 'pretty') return pino(options, prettyStream())
  return pino(options, pino.destination({ dest: 2, sync: false }))
}

/** Splits `host:port` (or `[v6]:port`). */
export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) }
}
