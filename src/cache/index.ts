/** The use cases: resolve narinfos, fetch and verify NARs. */
export {
  Cache,
  type CacheBucket,
  type CacheDeps,
  type CacheSettings,
  type ListingAnswer,
  type LogAnswer,
  type NarAnswer,
  type NarInfoAnswer,
  type RealisationAnswer,
} from './cache.js'
export { askUpstreams } from './ask.js'
export { Metrics, UPSTREAM_ANSWERS, type MetricSources, type UpstreamError } from './metrics.js'
export { verifyStore, type CorruptNar, type StoreVerification } from './verify-store.js'
export { PushReceiver, type PushDeps, type PushSettings } from './push.js'
export { verifyNarFile, type NarFileExpectation } from './verify-file.js'
export { mirrorClosures, exportClosures, walkClosure, type PathFailure, type ClosureProgress } from './mirror.js'
export { applyDenyToStore, deniedSigners, storedDenial, type DenySweep } from './apply-deny.js'
export { importCache } from './import.js'
export { NarFollower } from './nar-download.js'
export { BucketNarInfos, bucketNarSource, BUCKET_ORIGIN, BUCKET_SOURCE, type BucketNarInfo } from './bucket-narinfo.js'
