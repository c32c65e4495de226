/**
 * Prometheus metrics (prom-client), one registry per narthex instance so tests
 * can run several in one process.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** The metrics narthex keeps. */
export class Metrics {
  readonly registry = new Registry()
  readonly httpRequests = new Counter({
    name: 'narthex_http_requests_total',
    help: 'HTTP requests answered, by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  })
  readonly httpDuration = new Histogram({
    name: 'narthex_http_request_duration_seconds',
    help: 'Time to answer (headers sent for NARs), by route',
    labelNames: ['route'] as const,
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  })
  readonly narinfoLookups = new Counter({
    name: 'narthex_narinfo_lookups_total',
    help: 'narinfo look-ups by outcome (hit, admitted, absent, unavailable, refused)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  })
  readonly refusals = new Counter({
    name: 'narthex_refusals_total',
    help: 'Paths refused by policy, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly upstreamRequests = new Counter({
    name: 'narthex_upstream_requests_total',
    help: 'Requests to upstreams, by upstream, kind (narinfo, nar) and outcome',
    labelNames: ['upstream', 'kind', 'outcome'] as const,
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
  readonly bytesServed = new Counter({
    name: 'narthex_nar_bytes_served_total',
    help: 'NAR bytes sent to clients',
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

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'narthex_' })
  }
}
