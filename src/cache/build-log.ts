/**
 * Answering `GET /log/<drv>` (`nix log`): the first upstream that has the build
 * log, streamed through and not kept. Logs are not signed, so no policy
 * applies; every upstream is asked in config order. Log requests never count
 * for or against an upstream's health (see {@link Upstream.openLog}).
 */
import type { Readable } from 'node:stream'
import { isNarthexError } from '../errors.js'
import type { Upstream } from '../upstream/index.js'

/** The answer to a build-log request: an upstream's body passed through. */
export type LogAnswer =
  | { readonly kind: 'streaming'; readonly stream: Readable; readonly size: number | undefined }
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
