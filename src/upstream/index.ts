/** Upstream binary caches over undici, and the credentials narthex presents to private ones. */
export { Upstream, type UpstreamHealth, type UpstreamHooks, type UpstreamOptions, type NarInfoLookup, type NarResponse } from './upstream.js'
export { loadCredentials, type CredentialSource, type LoadedCredentials } from './credentials.js'
export { readSecretFile, secretFileModeWarning } from '../secret-file.js'
export { netrcEntryFor, parseNetrc, type NetrcEntry } from './netrc.js'
