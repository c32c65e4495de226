/**
 * The figures of the status page (`GET /`, `GET /status.json`), read from the
 * metrics summed over every process (core and workers), plus what only the core
 * knows: upstream health, the store, the audit log's latest refusals.
 */
import type { IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import { AggregatorRegistry, type Registry } from 'prom-client'
import { UPSTREAM_ANSWERS, type Cache, type Metrics, type UpstreamError } from '../cache/index.js'
import { clientSetup, type ClientSetup } from './client-setup.js'

/** What `registry.getMetricsAsJSON()` returns: one process's metrics. */
export type MetricsSnapshot = Awaited<ReturnType<Registry['getMetricsAsJSON']>>

/** A refusal, conflict or rejected NAR from the audit log. */
export interface RecentEvent {
  readonly time: string
  readonly decision: string
  readonly storePath: string
  readonly reason?: string | undefined
  readonly message?: string | undefined
  readonly upstreams?: readonly string[] | undefined
}

/** What the core provides for the status page, besides the metrics. */
export interface StatusSources {
  /** narthex's public key(s), `name:base64`. */
  readonly publicKeys: readonly string[]
  /** The configured `publicUrl`; without it the request's Host is used. */
  readonly publicUrl?: string | undefined
  /** `storage.maxSize`, when set. */
  readonly maxStoreBytes?: number | undefined
  /** Worker processes (0: the core answers clients itself). */
  readonly workers: number
  readonly upstreams: () => ReadonlyArray<{ name: string; url: string; down: boolean; consecutiveFailures: number; credentialsRejected?: boolean }>
  readonly lastUpstreamError: (upstream: string) => UpstreamError | undefined
  /** The latest refusals and conflicts, newest first (a bounded read of the audit log's tail). */
  readonly recentEvents: () => Promise<readonly RecentEvent[]>
}

/** Cumulative request figures at one moment, for the chart. */
export interface Totals {
  readonly hits: number
  readonly misses: number
  /** narinfo and NAR requests that were neither (absent, unavailable). */
  readonly other: number
  readonly bytes: number
}

/** One minute of the chart. */
export interface Bucket extends Totals {
  /** Start of the minute, ms since the epoch. */
  readonly start: number
}

/** Everything the status page shows; also the body of `GET /status.json`. */
export interface StatusData {
  readonly generatedAt: string
  readonly url: string
  readonly workers: number
  readonly hitRatio: number | null
  readonly totals: Totals & { readonly requests: number; readonly bytesFetched: number }
  /** narinfo and NAR requests by kind and outcome, with NAR bytes served. */
  readonly outcomes: ReadonlyArray<{ kind: string; outcome: string; requests: number; bytes: number }>
  readonly upstreams: ReadonlyArray<{
    name: string
    url: string
    up: boolean
    /** The upstream answered 401/403 to narthex's own credentials: a configuration problem. */
    credentialsRejected: boolean
    consecutiveFailures: number
    requests: number
    errors: number
    /** Mean narinfo latency since start, ms; null before the first request. */
    meanLatencyMs: number | null
    lastError: UpstreamError | null
  }>
  readonly store: { bytes: number; maxBytes: number | null; paths: number | null; narFiles: number | null; pinned: number | null }
  readonly downloadsInFlight: number
  readonly refusals: number
  readonly conflicts: number
  readonly verificationFailures: number
  readonly recent: readonly RecentEvent[]
  readonly publicKeys: readonly string[]
  readonly clientSetup: ClientSetup
  /** The last hour, one bucket per minute, oldest first. */
  readonly history: readonly Bucket[]
}

type Labels = Record<string, string | number | undefined>

function values(metrics: MetricsSnapshot, name: string): ReadonlyArray<{ value: number; labels: Labels; metricName?: string }> {
  return metrics.find((m) => m.name === name)?.values ?? []
}

function sum(metrics: MetricsSnapshot, name: string, keep: (labels: Labels) => boolean = () => true, metricName?: string): number {
  let total = 0
  for (const v of values(metrics, name)) if ((metricName === undefined || v.metricName === metricName) && keep(v.labels)) total += v.value
  return total
}

function gauge(metrics: MetricsSnapshot, name: string, keep?: (labels: Labels) => boolean): number | null {
  return values(metrics, name).some((v) => !keep || keep(v.labels)) ? sum(metrics, name, keep) : null
}

/** The cumulative request figures in `metrics`. */
export function totalsOf(metrics: MetricsSnapshot): Totals {
  let hits = 0
  let misses = 0
  let other = 0
  for (const v of values(metrics, 'narthex_cache_requests_total')) {
    if (v.labels.outcome === 'hit' || v.labels.outcome === 'found') hits += v.value
    else if (v.labels.outcome === 'miss') misses += v.value
    else other += v.value
  }
  return { hits, misses, other, bytes: sum(metrics, 'narthex_nar_bytes_served_total') }
}

const MINUTE = 60_000
const ZERO: Totals = { hits: 0, misses: 0, other: 0, bytes: 0 }

/** Samples of the cumulative totals over the last hour, turned into per-minute buckets. */
export class StatusHistory {
  readonly #samples: Array<{ t: number; totals: Totals }> = []

  constructor(readonly startedAt = Date.now()) {
    this.#samples.push({ t: startedAt, totals: ZERO })
  }

  /** Records the totals at time `t`; drops what is older than an hour and a minute. */
  add(t: number, totals: Totals): void {
    this.#samples.push({ t, totals })
    while (this.#samples.length > 2 && this.#samples[1].t < t - 61 * MINUTE) this.#samples.shift()
  }

  /** Sixty one-minute buckets ending with the current minute, which counts up to `now` and `current`. */
  buckets(now: number, current: Totals): Bucket[] {
    const samples = [...this.#samples, { t: now, totals: current }]
    const at = (t: number): Totals => {
      if (t < this.startedAt) return ZERO
      let found = samples[0].totals
      for (const s of samples) {
        if (s.t > t) break
        found = s.totals
      }
      return found
    }
    const thisMinute = Math.floor(now / MINUTE) * MINUTE
    const out: Bucket[] = []
    for (let i = 59; i >= 0; i--) {
      const start = thisMinute - i * MINUTE
      const a = at(start)
      const b = at(Math.min(start + MINUTE, now))
      // A restarted worker starts its counters at zero again: never a negative minute.
      const d = (k: keyof Totals) => Math.max(0, b[k] - a[k])
      out.push({ start, hits: d('hits'), misses: d('misses'), other: d('other'), bytes: d('bytes') })
    }
    return out
  }
}

/** Assembles the status from the summed metrics and the core's sources. */
export async function buildStatus(metrics: MetricsSnapshot, sources: StatusSources, url: string, history: StatusHistory): Promise<StatusData> {
  const totals = totalsOf(metrics)
  const bytesByOutcome = new Map<string, number>()
  for (const v of values(metrics, 'narthex_nar_bytes_served_total')) bytesByOutcome.set(String(v.labels.outcome), (bytesByOutcome.get(String(v.labels.outcome)) ?? 0) + v.value)
  const outcomes = values(metrics, 'narthex_cache_requests_total')
    .filter((v) => v.value > 0)
    .map((v) => ({
      kind: String(v.labels.kind),
      outcome: String(v.labels.outcome),
      requests: v.value,
      bytes: v.labels.kind === 'nar' ? (bytesByOutcome.get(String(v.labels.outcome)) ?? 0) : 0,
    }))
    .sort((a, b) => a.kind.localeCompare(b.kind) || b.requests - a.requests)
  const upstreams = sources.upstreams().map((u) => {
    const of = (l: Labels) => l.upstream === u.name
    const count = sum(metrics, 'narthex_upstream_request_duration_seconds', of, 'narthex_upstream_request_duration_seconds_count')
    const seconds = sum(metrics, 'narthex_upstream_request_duration_seconds', of, 'narthex_upstream_request_duration_seconds_sum')
    return {
      name: u.name,
      url: withoutCredentials(u.url),
      up: !u.down,
      credentialsRejected: u.credentialsRejected === true,
      consecutiveFailures: u.consecutiveFailures,
      requests: sum(metrics, 'narthex_upstream_requests_total', of),
      errors: sum(metrics, 'narthex_upstream_requests_total', (l) => of(l) && !UPSTREAM_ANSWERS.has(String(l.outcome))),
      meanLatencyMs: count > 0 ? (seconds / count) * 1000 : null,
      lastError: sources.lastUpstreamError(u.name) ?? null,
    }
  })
  const entries = (kind: string) => gauge(metrics, 'narthex_store_entries', (l) => l.kind === kind)
  return {
    generatedAt: new Date().toISOString(),
    url,
    workers: sources.workers,
    hitRatio: totals.hits + totals.misses > 0 ? totals.hits / (totals.hits + totals.misses) : null,
    totals: { ...totals, requests: sum(metrics, 'narthex_http_requests_total'), bytesFetched: sum(metrics, 'narthex_nar_bytes_fetched_total') },
    outcomes,
    upstreams,
    store: {
      bytes: sum(metrics, 'narthex_store_bytes'),
      maxBytes: sources.maxStoreBytes ?? null,
      paths: entries('paths'),
      narFiles: entries('nar_files'),
      pinned: entries('pinned'),
    },
    downloadsInFlight: sum(metrics, 'narthex_nar_downloads_in_flight'),
    refusals: sum(metrics, 'narthex_refusals_total'),
    conflicts: sum(metrics, 'narthex_conflicts_total'),
    verificationFailures: sum(metrics, 'narthex_nar_verification_failures_total'),
    recent: await sources.recentEvents(),
    publicKeys: sources.publicKeys,
    clientSetup: clientSetup({ url, publicKeys: sources.publicKeys }),
    history: history.buckets(Date.now(), totals),
  }
}

/** A URL without the user and password it may carry (the page is for anyone who reaches narthex). */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url)
    if (!u.username && !u.password) return url
    u.username = ''
    u.password = ''
    return u.toString().replace(/\/+$/, '')
  } catch {
    return url
  }
}

const HOST = /^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$/

/**
 * The URL clients reach this server at: the configured `publicUrl`, else the
 * request's Host (with `X-Forwarded-Proto: https` behind a TLS proxy), else `fallback`.
 */
export function publicUrlOf(configured: string | undefined, host: string | undefined, forwardedProto: string | string[] | undefined, fallback: string): string {
  if (configured) return configured
  if (host && HOST.test(host)) return `${forwardedProto === 'https' ? 'https' : 'http'}://${host}`
  return fallback
}

// How often the totals are sampled for the chart.
const HISTORY_SAMPLE_MS = 10_000

/** What a {@link StatusProvider} reads from. */
export interface StatusProviderDeps {
  readonly metrics: Metrics
  readonly cache: Cache
  readonly log: Logger
  readonly publicKey: string
  /** Every signing key's public key (key rotation); default: `publicKey` alone. */
  readonly publicKeys?: readonly string[] | undefined
  readonly status?: StatusSources | undefined
  readonly gatherWorkers?: (() => Promise<MetricsSnapshot[]>) | undefined
}

/** Sums the metrics of every process, samples them for the chart, and assembles the status of a request. */
export class StatusProvider {
  readonly #d: StatusProviderDeps
  readonly #history = new StatusHistory()
  readonly #sampler: NodeJS.Timeout

  constructor(deps: StatusProviderDeps) {
    this.#d = deps
    this.#sampler = setInterval(() => {
      this.allMetrics()
        .then((r) => r.getMetricsAsJSON())
        .then((m) => this.#history.add(Date.now(), totalsOf(m)))
        .catch((err) => deps.log.debug({ err: (err as Error).message }, 'cannot sample the metrics for the status page'))
    }, HISTORY_SAMPLE_MS)
    this.#sampler.unref()
  }

  /** Every process's metrics summed (the core's alone without workers). */
  async allMetrics(): Promise<Registry> {
    const { metrics, gatherWorkers } = this.#d
    for (const u of this.#d.cache.upstreams) metrics.upstreamUp.set({ upstream: u.name }, u.isDown ? 0 : 1)
    if (!gatherWorkers) return metrics.registry
    const [own, workers] = await Promise.all([metrics.registry.getMetricsAsJSON(), gatherWorkers()])
    return AggregatorRegistry.aggregate([own, ...workers])
  }

  /** The status as seen by `req` (whose Host names this server when no `publicUrl` is set). */
  async status(req: IncomingMessage): Promise<StatusData> {
    const d = this.#d
    const sources: StatusSources = d.status ?? {
      publicKeys: d.publicKeys ?? [d.publicKey],
      workers: 0,
      upstreams: () => d.cache.upstreams.map((u) => u.health()),
      lastUpstreamError: (name) => d.metrics.lastUpstreamError(name),
      recentEvents: () => Promise.resolve([]),
    }
    const addr = req.socket.address() as { address?: string; port?: number }
    const local = addr.address ? `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}` : 'http://localhost'
    const url = publicUrlOf(sources.publicUrl, req.headers.host, req.headers['x-forwarded-proto'], local)
    return buildStatus(await (await this.allMetrics()).getMetricsAsJSON(), sources, url, this.#history)
  }

  /** Stops sampling. */
  close(): void {
    clearInterval(this.#sampler)
  }
}
