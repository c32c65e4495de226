/**
 * Build logs (`nix log`). `PUT /log/<drv>` (`nix store copy-log --to`, an
 * authenticated push) stores the log under `<dataDir>/log/`, as sent: with a
 * `Content-Encoding` it is kept encoded and served with that encoding.
 * `GET /log/<drv>` answers a stored log first; otherwise the first upstream
 * that has it, streamed through and not kept. Logs are not signed, so no
 * policy applies; every upstream is asked in config order. Log requests never
 * count for or against an upstream's health (see {@link Upstream.openLog}).
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isNarthexError, NarthexError } from '../errors.js'
import type { Store } from '../store/index.js'
import type { Upstream } from '../upstream/index.js'

/** The answer to a build-log request: a stored log, or an upstream's body passed through. */
export type LogAnswer =
  | { readonly kind: 'streaming'; readonly stream: Readable; readonly size: number | undefined; readonly encoding?: string }
  | { readonly kind: 'absent' }
  | { readonly kind: 'unavailable'; readonly retryAfterS: number }

/**
 * Finds the build log of `drvName` (`<hash>-<name>.drv`) on `upstreams`, in
 * order. Absent when every upstream said so; unavailable when one that did not
 * have it could not be asked. The caller must consume or destroy the stream.
 */
export async function findBuildLog(upstreams: readonly Upstream[], drvName: string): Promise<LogAnswer> {
  let unavailable = false
  for (const upstream of upstreams) {
    try {
      const res = await upstream.openLog(drvName)
      return { kind: 'streaming', stream: res.body, size: res.contentLength }
    } catch (err) {
      if (!isNarthexError(err, 'NOT_FOUND')) unavailable = true
    }
  }
  return unavailable ? { kind: 'unavailable', retryAfterS: 10 } : { kind: 'absent' }
}

/** Content encodings a pushed log may be stored with (those Nix decodes when it downloads), mapped to a file suffix. */
const LOG_ENCODINGS: Readonly<Record<string, string>> = { identity: '', br: '.br', gzip: '.gz', xz: '.xz', zstd: '.zst' }

/** The largest build log a push may store. */
export const MAX_LOG_BYTES = 256 * 1024 * 1024

/** Where pushed build logs live: `<dataDir>/log/<drv>[.<encoding suffix>]`. */
function logDir(store: Store): string {
  return join(store.dataDir, 'log')
}

/**
 * Stores a pushed build log (name validated by the route), replacing an earlier
 * one. Written to a temp file and renamed, so a reader never sees half a log.
 * @throws NarthexError BAD_REQUEST for an encoding Nix would not decode,
 *   PAYLOAD_TOO_LARGE past {@link MAX_LOG_BYTES}.
 */
export async function storeBuildLog(store: Store, drvName: string, body: Readable, encoding: string | undefined): Promise<void> {
  const enc = (encoding ?? 'identity').trim().toLowerCase() || 'identity'
  const suffix = LOG_ENCODINGS[enc]
  if (suffix === undefined || !Object.hasOwn(LOG_ENCODINGS, enc)) {
    throw new NarthexError('BAD_REQUEST', `build logs are accepted plain or with Content-Encoding ${Object.keys(LOG_ENCODINGS).join(', ')}`)
  }
  const dir = logDir(store)
  await mkdir(dir, { recursive: true })
  const temp = store.tempPath(`log-${drvName}`)
  let size = 0
  try {
    body.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_LOG_BYTES) body.destroy(new NarthexError('PAYLOAD_TOO_LARGE', `build log larger than ${MAX_LOG_BYTES} bytes`))
    })
    await pipeline(body, createWriteStream(temp, { flags: 'wx' }))
    for (const other of Object.values(LOG_ENCODINGS)) if (other !== suffix) await unlink(join(dir, drvName + other)).catch(() => undefined)
    await rename(temp, join(dir, drvName + suffix))
  } catch (err) {
    await unlink(temp).catch(() => undefined)
    throw err
  }
}

/** A build log pushed to narthex, or undefined when none was. */
export async function storedBuildLog(store: Store, drvName: string): Promise<LogAnswer | undefined> {
  for (const [encoding, suffix] of Object.entries(LOG_ENCODINGS)) {
    const file = join(logDir(store), drvName + suffix)
    const st = await stat(file).catch(() => undefined)
    if (!st?.isFile()) continue
    return { kind: 'streaming', stream: createReadStream(file), size: st.size, ...(encoding === 'identity' ? {} : { encoding }) }
  }
  return undefined
}
