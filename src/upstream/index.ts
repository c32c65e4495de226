/** Upstream binary caches over undici. */
export { Upstream, type UpstreamOptions, type NarInfoLookup, type NarResponse } from './upstream.js'
