/** The HTTP server: the core (single owner of the store) and the worker front. */
export { createNarthexServer, type ServerDeps } from './server.js'
export { createFrontServer, type FrontDeps } from './front.js'
export { warmHttp, warmUpstreamClient } from './warm-http.js'
export { AccessControl, MAX_AUTHORIZATION_BYTES, presentedSecret, sendRefusal, type ClientToken, type Refusal, type Scope, type TokenSource } from './access.js'
export { clientSetup, formatClientSetup, type ClientSetup, type ClientSetupInput } from './client-setup.js'
export { HttpMetrics, setRequestToken, type RequestLogLevel } from './http-metrics.js'
export type { MetricsSnapshot, RecentEvent, StatusSources } from './status-data.js'
