/** Logging and listen addresses, shared by the core and the worker processes (which load little else). */
import { pino, type Logger } from 'pino'

/** Creates the logger narthex uses: JSON lines on stderr. */
export function createLogger(level: string): Logger {
  return pino({ level, base: undefined }, pino.destination({ dest: 2, sync: false }))
}

/** Splits `host:port` (or `[v6]:port`). */
export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) }
}

