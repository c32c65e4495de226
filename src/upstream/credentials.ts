/**
 * Credentials narthex presents to a private upstream, read from files: a netrc
 * file (the entry chosen by the upstream's host, as Nix and curl choose it) or
 * a file holding one bearer token. The secret lives only in the Authorization
 * header value kept here; messages name the file and the upstream, never it.
 */
import { readFileSync } from 'node:fs'
import { NarthexError } from '../errors.js'
import { readSecretFile, secretFileModeWarning } from '../secret-file.js'
import { netrcEntryFor, parseNetrc } from './netrc.js'

/** Where an upstream's credentials come from (the config's `netrcFile` or `bearerTokenFile`). */
export interface CredentialSource {
  readonly netrcFile?: string | undefined
  readonly bearerTokenFile?: string | undefined
}

/** Loaded credentials: the header to send, and warnings for the log. */
export interface LoadedCredentials {
  /** The `Authorization` header value, or undefined when the netrc has no entry for the host. */
  readonly authorization: string | undefined
  readonly warnings: readonly string[]
}

/**
 * Loads the credentials for the upstream `name` at `url` from `source`.
 * @throws NarthexError CONFIG_INVALID when a file cannot be read or parsed.
 */
export function loadCredentials(name: string, url: string, source: CredentialSource): LoadedCredentials {
  const what = `upstream ${name}`
  if (source.bearerTokenFile !== undefined) {
    const token = readSecretFile(source.bearerTokenFile, what)
    // Bearer tokens are token68 (RFC 6750); anything else would not survive an HTTP header.
    if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token)) {
      throw new NarthexError('CONFIG_INVALID', `${what}: ${source.bearerTokenFile} does not hold a bearer token (letters, digits, -._~+/ and trailing =)`)
    }
    return { authorization: `Bearer ${token}`, warnings: warningsFor(source.bearerTokenFile) }
  }
  if (source.netrcFile !== undefined) {
    let text: string
    try {
      text = readFileSync(source.netrcFile, 'utf8')
    } catch (err) {
      throw new NarthexError('CONFIG_INVALID', `${what}: cannot read ${source.netrcFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '')
    const entry = netrcEntryFor(parseNetrc(text, source.netrcFile), host)
    const warnings = [...warningsFor(source.netrcFile)]
    if (!entry || entry.password === undefined) {
      warnings.push(`${what}: ${source.netrcFile} has no password for ${host} (nor a default entry); narthex asks it without credentials`)
      return { authorization: undefined, warnings }
    }
    const basic = Buffer.from(`${entry.login ?? ''}:${entry.password}`, 'utf8').toString('base64')
    return { authorization: `Basic ${basic}`, warnings }
  }
  return { authorization: undefined, warnings: [] }
}

function warningsFor(file: string): string[] {
  const w = secretFileModeWarning(file)
  return w ? [w] : []
}
