/**
 * `narthex client-config`: what a Nix client needs to use this narthex, with
 * the URL clients reach it at (`--url`, else the config's `publicUrl`, else its
 * listen address) and its public key. The text is src/server/client-setup.ts's,
 * the same the status page shows.
 */
import type { Config } from '../config/index.js'
import { formatPublicKey, toPublicKey } from '../protocol/index.js'
import { formatClientSetup } from '../server/index.js'
import { loadOrCreateSigningKey } from './keys.js'
import { splitListen } from './log.js'

/** The URL clients are told: `--url`, `publicUrl`, or `http://<listen>` (`<this-host>` for a wildcard address). */
export function clientUrl(config: Config, url: string | undefined): string {
  if (url) return url.replace(/\/+$/, '')
  if (config.publicUrl) return config.publicUrl
  const { host, port } = splitListen(config.listen)
  const shown = host === '0.0.0.0' || host === '::' ? '<this-host>' : host.includes(':') ? `[${host}]` : host
  return `http://${shown}:${port}`
}

/** The text `narthex client-config` prints: nix.conf lines, or with `nixos` the NixOS block. */
export function clientConfigText(config: Config, options: { url?: string | undefined; nixos?: boolean | undefined }): string {
  const { key } = loadOrCreateSigningKey(config.signingKeyFile, config.signingKeyName)
  return formatClientSetup({ url: clientUrl(config, options.url), publicKeys: [formatPublicKey(toPublicKey(key))] }, { nixos: options.nixos === true })
}
