/**
 * What a Nix client needs to use narthex, written for the way users trip over
 * it: on a multi-user install a user's own `substituters` line is ignored
 * ("warning: ignoring untrusted substituter") unless the user is in
 * `trusted-users`, so the lines go into the system-wide configuration. Shared by
 * `narthex client-config` and the status page.
 */

/** What the instructions are about. */
export interface ClientSetupInput {
  /** The URL clients reach narthex at, without a trailing slash. */
  readonly url: string
  /** narthex's public key(s), `name:base64`. */
  readonly publicKeys: readonly string[]
}

/** The pieces of the instructions, each ready to copy. */
export interface ClientSetup {
  /** Lines for `/etc/nix/nix.conf`. */
  readonly nixConf: string
  /** The NixOS `nix.settings` block. */
  readonly nixos: string
  /** The alternative: let a user set substituters of their own. */
  readonly trustedUsers: string
  /** A command that shows whether this client's nix reaches narthex and trusts its key. */
  readonly check: string
  /** What `fallback = true` changes. */
  readonly fallback: string
}

function quoteNix(s: string): string {
  return `"${s.replace(/[\\"$]/g, (c) => `\\${c}`)}"`
}

/** Builds the instructions for `input`. */
export function clientSetup(input: ClientSetupInput): ClientSetup {
  const keys = input.publicKeys.join(' ')
  const nixConf = [
    `substituters = ${input.url}`,
    `trusted-public-keys = ${keys}`,
    'fallback = true',
  ].join('\n')
  const nixos = [
    'nix.settings = {',
    `  substituters = [ ${quoteNix(input.url)} ];`,
    `  trusted-public-keys = [ ${input.publicKeys.map(quoteNix).join(' ')} ];`,
    '  fallback = true;',
    '};',
  ].join('\n')
  const trustedUsers = 'trusted-users = root @wheel'
  const check = `nix --extra-experimental-features nix-command store ping --store ${input.url}`
  const fallback =
    'fallback = true: when narthex answers 503 (an upstream could not be asked) after nix\'s retries, nix builds the path ' +
    'itself instead of stopping with an error (Nix 2.32 and later first try the next substituter). ' +
    'A 404 (no upstream has the path, or the policy refused it) makes nix build it either way.'
  return { nixConf, nixos, trustedUsers, check, fallback }
}

/** The full text `narthex client-config` prints: nix.conf (or, with `nixos`, the NixOS block) with the why. */
export function formatClientSetup(input: ClientSetupInput, options: { nixos?: boolean } = {}): string {
  const s = clientSetup(input)
  const lines: string[] = []
  if (options.nixos) {
    lines.push(
      '# NixOS: in /etc/nixos/configuration.nix, then `sudo nixos-rebuild switch`.',
      '# `substituters` replaces cache.nixos.org (narthex fronts it); write `extra-substituters`',
      '# and `extra-trusted-public-keys` instead to keep asking cache.nixos.org directly too.',
      s.nixos,
    )
  } else {
    lines.push(
      '# System-wide, in /etc/nix/nix.conf, then restart the daemon: `sudo systemctl restart nix-daemon`.',
      '# On a multi-user install a user\'s ~/.config/nix/nix.conf `substituters` line is ignored',
      '# ("warning: ignoring untrusted substituter") unless that user is in trusted-users.',
      '# `substituters` replaces cache.nixos.org (narthex fronts it); write `extra-substituters`',
      '# and `extra-trusted-public-keys` instead to keep asking cache.nixos.org directly too.',
      s.nixConf,
    )
  }
  lines.push(
    '',
    '# Alternatively, let users choose substituters themselves (they become as powerful as root',
    `# for the store): in /etc/nix/nix.conf, ${options.nixos ? 'or nix.settings.trusted-users on NixOS, ' : ''}add`,
    `#   ${s.trustedUsers}`,
    '',
    '# Check that nix reaches narthex (prints the store URL; an error names the problem):',
    `#   ${s.check}`,
    '# and that nix uses it and trusts its key: this shows the daemon\'s substituters and keys:',
    `#   nix --extra-experimental-features nix-command show-config | grep -E '^(substituters|trusted-public-keys) '`,
    '',
    `# ${s.fallback}`,
  )
  return `${lines.join('\n')}\n`
}
