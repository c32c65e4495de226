/**
 * Asking upstreams for a narinfo, all at once, turning every outcome into an
 * {@link UpstreamAnswer} for the policy's decision.
 */
import type { Logger } from 'pino'
import { isNarthexError } from '../errors.js'
import type { UpstreamAnswer } from '../policy/index.js'
import type { Upstream } from '../upstream/index.js'
import type { Metrics } from './metrics.js'

/**
 * Asks the named upstreams for `hashPart` in parallel. Failures become
 * "unavailable" answers, and so does a narinfo in a compression this machine
 * cannot decode (narthex never admits what it cannot verify).
 */
export async function askUpstreams(
  upstreams: ReadonlyMap<string, Upstream>,
  names: readonly string[],
  hashPart: string,
  supported: ReadonlySet<string>,
  log?: Logger,
  metrics?: Metrics,
): Promise<Map<string, UpstreamAnswer>> {
  const answers = await Promise.all(
    names.map(async (name): Promise<UpstreamAnswer> => {
      const upstream = upstreams.get(name)
      if (!upstream) return { upstream: name, kind: 'unavailable', reason: 'not configured' }
      const started = performance.now()
      const took = () => metrics?.upstreamLatency.observe({ upstream: name, kind: 'narinfo' }, (performance.now() - started) / 1000)
      try {
        const res = await upstream.fetchNarInfo(hashPart)
        took()
        metrics?.upstreamRequests.inc({ upstream: name, kind: 'narinfo', outcome: res.kind })
        if (res.kind === 'absent') return { upstream: name, kind: 'absent' }
        if (!supported.has(res.info.compression)) {
          log?.warn({ upstream: name, hashPart, compression: res.info.compression }, 'upstream offers a compression narthex cannot verify')
          return { upstream: name, kind: 'unavailable', reason: `unsupported compression ${res.info.compression}` }
        }
        return { upstream: name, kind: 'present', info: res.info }
      } catch (err) {
        took()
        const code = isNarthexError(err) ? err.code : 'UNKNOWN'
        metrics?.upstreamRequests.inc({ upstream: name, kind: 'narinfo', outcome: code })
        log?.warn({ upstream: name, hashPart, code, err: (err as Error).message }, 'upstream narinfo look-up failed')
        return { upstream: name, kind: 'unavailable', reason: (err as Error).message }
      }
    }),
  )
  return new Map(answers.map((a) => [a.upstream, a]))
}
