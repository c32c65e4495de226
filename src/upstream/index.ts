/** Upstream binary caches over HTTP(S) or in S3 buckets, and the credentials narthex presents to private ones. */
export { Upstream, type UpstreamHealth, type UpstreamHooks, type UpstreamOptions, type NarInfoLookup, type NarResponse } from './upstream.js'
export { isS3Url, transportFor, upstreamLocation, type Transport, type TransportResponse } from './transport.js'
export { s3ErrorStatus, type S3ErrorStatus } from './s3-transport.js'
export { loadCredentials, type CredentialSource, type LoadedCredentials } from './credentials.js'
export { readSecretFile, secretFileModeWarning } from '../secret-file.js'
export { netrcEntryFor, parseNetrc, type NetrcEntry } from './netrc.js'
