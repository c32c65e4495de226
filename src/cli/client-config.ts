/**
 * `narthex client-config`: what a Nix client needs to use this narthex, with
 * the URL clients reach it at (`--url`, else the config's `publicUrl`, else its
 * listen address) and its public key. The text is src/server/client-setup.ts's,
 * the same the status page shows.
 */
import type { Config } from '../config/index.js'
import { formatPublicKey, toPublicKey } from '../protocol/index.js'
import { formatClientSetup } from '../server/index.js'
import { loadOrCreateSigningKeys } from './keys.js'
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
  const { keys } = loadOrCreateSigningKeys(config.signingKeyFiles, config.signingKeyName)
  const url = clientUrl(config, options.url)
  const setup = formatClientSetup({ url, publicKeys: keys.map((k) => formatPublicKey(toPublicKey(k))) }, { nixos: options.nixos === true })
  return config.access.read === 'tokens' ? `${setup}\n\n${privateClientConfig(url)}` : setup
}

/** The netrc set-up a client of a private narthex needs (a placeholder, never a token). */
function privateClientConfig(url: string): string {
  const host = new URL(url.replace('<this-host>', 'this-host')).hostname.replace('this-host', '<this-host>')
  return [
    'netrc-file = /etc/nix/netrc',
    '',
    '# This narthex needs a token with the read scope. Nix sends it from a netrc file:',
    '# put this line in /etc/nix/netrc (chmod 600; the nix-daemon reads it as root):',
    `#   machine ${host} password <your token>`,
    '# On NixOS, instead of editing nix.conf:',
    '#   nix.settings.netrc-file = "/etc/nix/netrc";',
  ].join('\n')
}
