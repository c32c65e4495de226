/**
 * narthex's own signing keys, from `signingKeyFile` (one file or a list). The
 * first file is created (mode 0600) on first start when missing; the others must
 * exist, since a key created by surprise in the middle of a rotation would sign
 * what no client trusts. Every key signs what narthex serves.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { NarthexError } from '../errors.js'
import { formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from '../protocol/index.js'

function readKeyFile(file: string): SecretKey | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new NarthexError('CONFIG_INVALID', `signingKeyFile ${file}: cannot read it (${(err as NodeJS.ErrnoException).code})`, { cause: err })
  }
  try {
    return parseSecretKey(text)
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `signingKeyFile ${file}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Loads the signing key, creating it when the file does not exist.
 * @returns the key and whether it was just created.
 * @throws NarthexError CONFIG_INVALID when the file exists but is not a Nix secret key.
 */
export function loadOrCreateSigningKey(file: string, name: string): { key: SecretKey; created: boolean } {
  const existing = readKeyFile(file)
  if (existing) return { key: existing, created: false }
  const key = generateSecretKey(name)
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, `${formatSecretKey(key)}\n`, { mode: 0o600, flag: 'wx' })
  return { key, created: true }
}

/**
 * Loads every signing key of `files`, in order: the first is created (named
 * `name`) when missing, the others must exist, and no two may share a key name
 * (Nix looks a signature's key up by its name, so a client could trust only one of them).
 * @returns the keys and whether the first was just created.
 * @throws NarthexError CONFIG_INVALID for a missing later file, a file that is not a Nix secret key, or a repeated key name.
 */
export function loadOrCreateSigningKeys(files: readonly string[], name: string): { keys: SecretKey[]; created: boolean } {
  const [first, ...rest] = files
  if (first === undefined) throw new NarthexError('CONFIG_INVALID', 'signingKeyFile: name at least one key file')
  // The later keys are read first, so a bad list creates nothing.
  const later = rest.map((file, i) => {
    const k = readKeyFile(file)
    if (!k) {
      throw new NarthexError(
        'CONFIG_INVALID',
        `signingKeyFile[${i + 1}] ${file} does not exist: only the first key is created by narthex; make this one with 'narthex keygen NAME > ${file}' (mode 0600)`,
      )
    }
    return k
  })
  const { key, created } = loadOrCreateSigningKey(first, name)
  const keys = [key]
  later.forEach((k, i) => {
    if (keys.some((other) => other.name === k.name)) {
      throw new NarthexError('CONFIG_INVALID', `signingKeyFile[${i + 1}] ${rest[i]}: the key name ${JSON.stringify(k.name)} is already used by an earlier key; give each key its own name (e.g. narthex-2)`)
    }
    keys.push(k)
  })
  return { keys, created }
}
