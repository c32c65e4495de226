/**
 * Pieces of HTTP handling shared by the core server and the worker front:
 * the route patterns, and sending NAR files and streams.
 */
import { open, type FileHandle } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { NarFollower } from '../cache/index.js'
import { copyFileTo } from '../file-copy.js'
import { DRV_OUTPUT_ID_PATTERN, HASH_PART_PATTERN, MAX_NAME_LENGTH, NAME_CHAR_CLASS, NAR_URL_PATTERN } from '../protocol/index.js'
import { respondStatus } from './respond-error.js'

/** `/<hashPart>.narinfo`. */
export const NARINFO_ROUTE = new RegExp(`^/(${HASH_PART_PATTERN})\\.narinfo$`)
/**
 * `/nar/<hashPart>/<nix32>.nar[.ext]` (the URL narthex's narinfos give) or
 * `/nar/<nix32>.nar[.ext]` (Nix's form: pushes, and narinfos served before),
 * with the extension of a compression narthex knows. Group 1 is the hash part
 * (absent in the short form), group 2 the file name.
 */
export const NAR_ROUTE = new RegExp(`^/${NAR_URL_PATTERN}$`)
/** `/log/<hash>-<name>.drv`: a build log. The name may not start with a dot here. */
export const LOG_ROUTE = new RegExp(`^/log/(${HASH_PART_PATTERN}-(?!\\.)${NAME_CHAR_CLASS}{1,${MAX_NAME_LENGTH}}\\.drv)$`)
/** `/realisations/sha256:<hex>!<output>.doi`: a ca-derivations realisation. */
export const REALISATION_ROUTE = new RegExp(`^/realisations/(${DRV_OUTPUT_ID_PATTERN})\\.doi$`)
/** `/<hashPart>.ls`: a NAR listing. */
export const LISTING_ROUTE = new RegExp(`^/(${HASH_PART_PATTERN})\\.ls$`)
/** Anything that looks like an attempt to leave the route space: a 400, not a 404. */
export const SUSPICIOUS_PATH = /\.\.|%|\\|\0|\/\//

/** The request path without its query string. */
export function requestPath(req: IncomingMessage): string {
  const raw = req.url ?? '/'
  const q = raw.indexOf('?')
  return q >= 0 ? raw.slice(0, q) : raw
}

/**
 * Pipes `stream` into the response. If it fails (a NAR that failed verification,
 * a client gone), the connection is cut, so the response can never look complete.
 * @returns the bytes sent.
 */
export async function sendStream(stream: Readable, res: ServerResponse): Promise<number> {
  let sent = 0
  stream.on('data', (c: Buffer) => {
    sent += c.length
  })
  try {
    await pipeline(stream, res)
  } catch {
    res.destroy()
  }
  return sent
}

/**
 * Sends a complete NAR file with `Accept-Ranges: bytes` and single-range support.
 * @returns the bytes sent.
 */
export async function sendFile(req: IncomingMessage, res: ServerResponse, path: string, size: number): Promise<number> {
  const headers: Record<string, string | number> = { 'content-type': 'application/x-nix-nar', 'accept-ranges': 'bytes' }
  const range = parseRange(req.headers.range, size)
  if (range === 'invalid') {
    respondStatus(res, 416, undefined, { 'content-range': `bytes */${size}` })
    return 0
  }
  const [start, end] = range ?? [0, size - 1]
  headers['content-length'] = size === 0 ? 0 : end - start + 1
  if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`
  res.writeHead(range ? 206 : 200, headers)
  if (req.method === 'HEAD' || size === 0) {
    res.end()
    return 0
  }
  let fh: FileHandle | undefined
  try {
    return await sendOrCut(res, async () => {
      fh = await open(path, 'r')
      return copyFileTo(res, fh.fd, start, end + 1)
    })
  } finally {
    await fh?.close().catch(() => undefined)
  }
}

/**
 * Runs `send` (which writes the body) and ends the response; if it fails, the
 * connection is cut instead, so the response can never look complete.
 * @returns the bytes `send` reported, 0 when it failed.
 */
async function sendOrCut(res: ServerResponse, send: () => Promise<number>): Promise<number> {
  try {
    const sent = await send()
    res.end()
    return sent
  } catch {
    res.destroy()
    return 0
  }
}

/**
 * Sends a NAR that is still being downloaded, as it arrives. If the download
 * fails, the connection is cut, so the response can never look complete.
 * @returns the bytes sent.
 */
export function sendFollower(follower: NarFollower, res: ServerResponse): Promise<number> {
  return sendOrCut(res, () => follower.sendTo(res))
}

/** Parses a single `bytes=a-b` range; undefined when absent or not a plain single range. */
export function parseRange(header: string | undefined, size: number): [number, number] | 'invalid' | undefined {
  if (!header) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  let start: number
  let end: number
  if (m[1] === '') {
    const suffix = Number(m[2])
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(m[1])
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  }
  if (start > end || start >= size) return 'invalid'
  return [start, end]
}
