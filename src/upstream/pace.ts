/**
 * Helpers of an upstream's downloads: reading a capped small body (a narinfo)
 * and watching a NAR download's pace.
 */
import type { Readable } from 'node:stream'
import { NarthexError } from '../errors.js'

/** Reads a small body (a narinfo) as text, refusing more than `maxBytes`. */
export async function readCapped(body: Readable, maxBytes: number, upstream: string, what = 'narinfo'): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > maxBytes) {
      // Leaving the loop by a throw makes the iterator destroy the body, with its error handled.
      throw new NarthexError('UPSTREAM_INVALID', `upstream ${upstream} sent a ${what} larger than ${maxBytes} bytes`, { detail: { upstream } })
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** Counts a download's bytes; see {@link Upstream.watchSpeed}. */
export interface SpeedWatch {
  /** `bytes` more arrived. */
  add(bytes: number): void
  /** The download ended: stop watching. */
  stop(): void
}

/**
 * Calls `onSlow` with UPSTREAM_TIMEOUT when fewer than `minBytesPerSecond ×
 * window` bytes arrived in the last window: a trickle (1 byte/s) never trips an
 * idle timeout, so it needs a rate limit of its own.
 */
export function watchSpeed(minBytesPerSecond: number, windowMs: number, upstream: string, onSlow: (err: NarthexError) => void): SpeedWatch {
  let windowBytes = 0
  if (minBytesPerSecond <= 0) return { add: () => undefined, stop: () => undefined }
  const needed = (minBytesPerSecond * windowMs) / 1000
  const timer = setInterval(() => {
    if (windowBytes < needed) {
      clearInterval(timer)
      onSlow(
        new NarthexError('UPSTREAM_TIMEOUT', `upstream ${upstream} sent ${windowBytes} bytes in ${windowMs} ms, below ${minBytesPerSecond} bytes/s`, {
          detail: { upstream },
        }),
      )
    }
    windowBytes = 0
  }, windowMs)
  timer.unref()
  return {
    add: (bytes) => {
      windowBytes += bytes
    },
    stop: () => clearInterval(timer),
  }
}
