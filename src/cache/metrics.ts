/**
 * Prometheus metrics of the cache (prom-client): what narthex asked its
 * upstreams, decided and stored. One registry per narthex instance so tests can
 * run several in one process. What clients were answered is counted by the
 * HTTP layer (src/server/http-metrics.ts) on the same registry.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'


/** The last failed upstream request, as the status page shows it. */
export interface UpstreamError {
  readonly kind: string
  /** The error code (e.g. UPSTREAM_TIMEOUT) or outcome. */
  readonly code: string
  readonly at: number
}

/** Figures read when the metrics are collected (the store and the downloads are owned elsewhere). */
export interface MetricSources {
  readonly storeBytes: () => number
  /** Paths, NAR files and pins in the index; counted in the background, so it may lag. */
  readonly storeCounts?: () => { paths: number; narFiles: number; pinned: number } | undefined
  /** The bucket's upload queue (storage.s3). */
  readonly bucketUploads?: () => { pending: number; uploadedBytes: number; uploadedFiles: number; failures: number }
}

/** Outcomes of `narthex_upstream_requests_total` that are answers, not errors (every other outcome is an error code). */
export const UPSTREAM_ANSWERS: ReadonlySet<string> = new Set(['present', 'absent', 'verified'])

/** The metrics narthex keeps about its cache. */
export class Metrics {
  readonly registry = new Registry()
  #sources: MetricSources | undefined
  readonly #lastErrors = new Map<string, UpstreamError>()

  readonly narinfoLookups = new Counter({
    name: 'narthex_narinfo_lookups_total',
    help: 'narinfo look-ups by the core, by outcome (hit, admitted, absent, unavailable, refused)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })
  readonly refusals = new Counter({
    name: 'narthex_refusals_total',
    help: 'Paths refused by policy, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  /** Conflicts recorded at admission (onConflict: priority), by rule and dissenting upstream. */
  readonly conflicts = new Counter({
    name: 'narthex_conflicts_total',
    help: 'Signed answers of a rule\'s upstreams that disagreed with the admitted one (onConflict: priority), by rule and dissenting upstream',
    labelNames: ['rule', 'upstream'] as const,
    registers: [this.registry],
  })
  readonly upstreamRequests = new Counter({
    name: 'narthex_upstream_requests_total',
    help: 'Requests to upstreams, by upstream, kind (narinfo, nar) and outcome (present, absent, verified, or an error code)',
    labelNames: ['upstream', 'kind', 'outcome'] as const,
    registers: [this.registry],
  })
  readonly upstreamLatency = new Histogram({
    name: 'narthex_upstream_request_duration_seconds',
    help: 'Time an upstream took to answer a narinfo request (errors included), by upstream',
    labelNames: ['upstream', 'kind'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })
  readonly narFailures = new Counter({
    name: 'narthex_nar_verification_failures_total',
    help: 'NAR downloads discarded, by upstream and error code',
    labelNames: ['upstream', 'code'] as const,
    registers: [this.registry],
  })
  readonly bytesFetched = new Counter({
    name: 'narthex_nar_bytes_fetched_total',
    help: 'Verified NAR bytes fetched from upstreams',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  /**
   * NAR bytes fetched ahead of clients (`prefetch.nars`), by whether a client
   * asked for the NAR since (`used="yes"`) or not yet (`used="no"`). Count with
   * {@link Metrics.recordPrefetchBytes}.
   */
  readonly prefetchBytes = new Counter({
    name: 'narthex_prefetch_bytes_total',
    help: 'NAR bytes fetched ahead of clients, by whether a client has asked for them since (used: yes, no)',
    labelNames: ['used'] as const,
    registers: [this.registry],
  })
  readonly prefetchedBytes = new Counter({
    name: 'narthex_prefetched_bytes_total',
    help: 'Bytes of NARs prefetched ahead of the client, by whether a client then asked for them (yes) or not within 10 minutes (no)',
    labelNames: ['used'] as const,
    registers: [this.registry],
  })
  readonly downloadsInFlight = new Gauge({
    name: 'narthex_nar_downloads_in_flight',
    help: 'Upstream NAR downloads running',
    registers: [this.registry],
  })
  readonly upstreamUp = new Gauge({
    name: 'narthex_upstream_up',
    help: '1 when the upstream is not marked down',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  readonly storeBytes = new Gauge({
    name: 'narthex_store_bytes',
    help: 'Bytes of the NAR files in the store',
    registers: [this.registry],
    collect: () => {
      const s = this.#sources
      if (s) this.storeBytes.set(s.storeBytes())
    },
  })
  readonly storeEntries = new Gauge({
    name: 'narthex_store_entries',
    help: 'Entries in the store index, by kind (paths: admitted narinfos, nar_files, pinned)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
    collect: () => {
      const counts = this.#sources?.storeCounts?.()
      if (!counts) return
      this.storeEntries.set({ kind: 'paths' }, counts.paths)
      this.storeEntries.set({ kind: 'nar_files' }, counts.narFiles)
      this.storeEntries.set({ kind: 'pinned' }, counts.pinned)
    },
  })

  readonly bucketUploadsPending = new Gauge({
    name: 'narthex_bucket_uploads_pending',
    help: 'Verified NAR files waiting for (or in) their upload to the bucket (storage.s3); it grows while the bucket is down',
    registers: [this.registry],
    collect: () => {
      const figures = this.#sources?.bucketUploads?.()
      if (figures) this.bucketUploadsPending.set(figures.pending)
    },
  })
  readonly bucketUploaded = new Counter({
    name: 'narthex_bucket_uploaded_total',
    help: 'NAR files uploaded to the bucket (storage.s3), by unit (files, bytes)',
    labelNames: ['unit'] as const,
    registers: [this.registry],
    collect: () => {
      const figures = this.#sources?.bucketUploads?.()
      if (!figures) return
      this.#catchUp(this.bucketUploaded, { unit: 'files' }, figures.uploadedFiles)
      this.#catchUp(this.bucketUploaded, { unit: 'bytes' }, figures.uploadedBytes)
    },
  })
  readonly bucketUploadFailures = new Counter({
    name: 'narthex_bucket_upload_failures_total',
    help: 'Failed NAR uploads to the bucket (each is retried with backoff)',
    registers: [this.registry],
    collect: () => {
      const figures = this.#sources?.bucketUploads?.()
      if (figures) this.#catchUp(this.bucketUploadFailures, {}, figures.failures)
    },
  })
  readonly #counted = new Map<string, number>()

  /** Raises a counter kept elsewhere to its owner's figure. */
  #catchUp(counter: Counter<string>, labels: Record<string, string>, value: number): void {
    const key = `${(counter as unknown as { name: string }).name} ${JSON.stringify(labels)}`
    const delta = value - (this.#counted.get(key) ?? 0)
    if (delta > 0) counter.inc(labels, delta)
    this.#counted.set(key, value)
  }

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'narthex_' })
    // Series an operator alerts on exist from the start, at 0, so that `increase()` sees the first one.
    for (const used of ['yes', 'no']) this.prefetchBytes.inc({ used }, 0)
    // Every failed upstream request passes through this counter: remember the last one per upstream.
    const inc = this.upstreamRequests.inc.bind(this.upstreamRequests) as (labels: Record<string, string>, value?: number) => void
    this.upstreamRequests.inc = ((labels: Record<string, string>, value?: number) => {
      if (labels.upstream && labels.outcome && !UPSTREAM_ANSWERS.has(labels.outcome)) {
        this.#lastErrors.set(labels.upstream, { kind: labels.kind ?? '', code: labels.outcome, at: Date.now() })
      }
      inc(labels, value)
    }) as typeof this.upstreamRequests.inc
  }

  /** Connects the gauges read at collection time to what owns the figures. */
  watch(sources: MetricSources): void {
    this.#sources = sources
  }

  /** Counts prefetched NAR bytes: `used` false when fetched ahead, true once a client asks for them. */
  recordPrefetchBytes(bytes: number, used: boolean): void {
    this.prefetchBytes.inc({ used: used ? 'yes' : 'no' }, bytes)
  }

  /** The last failed request to `upstream`, if any since start. */
  lastUpstreamError(upstream: string): UpstreamError | undefined {
    return this.#lastErrors.get(upstream)
  }
}
