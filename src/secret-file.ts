/**
 * Secret files (upstream bearer tokens, client access tokens): read one token
 * from a file, and warn when the file is readable by others. Shared by the
 * upstream clients and the server's access control; never logs the secret.
 */
import { readFileSync, statSync } from 'node:fs'
import { NarthexError } from './errors.js'

/**
 * A warning when `file` is readable by its group or by others, undefined when
 * it is not (a secret should be mode 0600 or 0400).
 */
export function secretFileModeWarning(file: string): string | undefined {
  let mode: number
  try {
    mode = statSync(file).mode
  } catch {
    return undefined
  }
  if ((mode & 0o044) === 0) return undefined
  return `secret file ${file} is readable by ${mode & 0o004 ? 'everyone' : 'its group'} (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`
}

/**
 * Reads a secret file: its content with surrounding white space trimmed.
 * @throws NarthexError CONFIG_INVALID when it cannot be read or is empty.
 */
export function readSecretFile(file: string, what: string): string {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const secret = text.trim()
  if (secret === '') throw new NarthexError('CONFIG_INVALID', `${what}: ${file} is empty`)
  if (/[\r\n]/.test(secret)) throw new NarthexError('CONFIG_INVALID', `${what}: ${file} must hold one token on one line`)
  return secret
}
