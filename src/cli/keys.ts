/**
 * narthex's own signing key: read from `signingKeyFile`, created there (mode
 * 0600) on first start when missing.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { NarthexError } from '../errors.js'
import { formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from '../protocol/index.js'

/**
 * Loads the signing key, creating it when the file does not exist.
 * @returns the key and whether it was just created.
 * @throws NarthexError CONFIG_INVALID when the file exists but is not a Nix secret key.
 */
export function loadOrCreateSigningKey(file: string, name: string): { key: SecretKey; created: boolean } {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new NarthexError('CONFIG_INVALID', `signingKeyFile ${file}: cannot read it (${(err as NodeJS.ErrnoException).code})`, { cause: err })
    }
    const key = generateSecretKey(name)
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, `${formatSecretKey(key)}\n`, { mode: 0o600, flag: 'wx' })
    return { key, created: true }
  }
  try {
    return { key: parseSecretKey(text), created: false }
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `signingKeyFile ${file}: ${(err as Error).message}`, { cause: err })
  }
}
