/**
 * Store paths: `/nix/store/<32 nix32 chars>-<name>`. The rules are those of Nix's
 * `StorePath` constructor (src/libstore/path.cc): the name is 1–211 characters of
 * `[0-9A-Za-z+\-._?=]`, not `.` or `..`, and does not start with `.-` or `..-`.
 */
import { NarthexError } from '../errors.js'
import { isNix32, NIX32_CHAR_CLASS } from './nixbase32.js'

/** The store directory narthex serves. Other store dirs are not supported. */
export const STORE_DIR = '/nix/store'

/** Characters in a store path's hash part. */
export const HASH_PART_LENGTH = 32

/** Longest allowed name part. */
export const MAX_NAME_LENGTH = 211

/** A regular-expression source matching one hash part (32 nix32 characters), unanchored. */
export const HASH_PART_PATTERN = `${NIX32_CHAR_CLASS}{${HASH_PART_LENGTH}}`

/** A regular-expression character class matching one character of a store path name. */
export const NAME_CHAR_CLASS = '[0-9A-Za-z+\\-._?=]'

/** A validated store path. */
export interface StorePath {
  /** The 32-character nix32 hash part. */
  readonly hashPart: string
  /** The name part after the dash. */
  readonly name: string
}

const NAME_CHARS = new RegExp(`^${NAME_CHAR_CLASS}+$`)

/** True when `s` is a syntactically valid hash part. */
export function isHashPart(s: string): boolean {
  return s.length === HASH_PART_LENGTH && isNix32(s)
}

/** Why `name` is not a valid store path name, or undefined when it is. */
function nameProblem(name: string): string | undefined {
  if (name.length === 0) return 'name is empty'
  if (name.length > MAX_NAME_LENGTH) return `name is longer than ${MAX_NAME_LENGTH} characters`
  if (!NAME_CHARS.test(name)) return 'name has a character outside [0-9A-Za-z+-._?=]'
  if (name === '.' || name === '..' || name.startsWith('.-') || name.startsWith('..-')) {
    return 'name may not be "." or "..", nor start with ".-" or "..-"'
  }
  return undefined
}

/**
 * Parses a store path basename `<hash>-<name>`.
 * @throws NarthexError STORE_PATH_INVALID naming what is wrong.
 */
export function parseStorePathBase(base: string): StorePath {
  const hashPart = base.slice(0, HASH_PART_LENGTH)
  if (base.length < HASH_PART_LENGTH + 2 || base[HASH_PART_LENGTH] !== '-') {
    throw new NarthexError('STORE_PATH_INVALID', `store path ${JSON.stringify(base)} is not <hash>-<name>`)
  }
  if (!isHashPart(hashPart)) {
    throw new NarthexError('STORE_PATH_INVALID', `store path ${JSON.stringify(base)} has an invalid hash part`)
  }
  const name = base.slice(HASH_PART_LENGTH + 1)
  const problem = nameProblem(name)
  if (problem) throw new NarthexError('STORE_PATH_INVALID', `store path ${JSON.stringify(base)}: ${problem}`)
  return { hashPart, name }
}

/**
 * Parses a full store path `/nix/store/<hash>-<name>`.
 * @throws NarthexError STORE_PATH_INVALID when it is outside the store or malformed.
 */
export function parseStorePath(path: string): StorePath {
  const prefix = `${STORE_DIR}/`
  if (!path.startsWith(prefix)) {
    throw new NarthexError('STORE_PATH_INVALID', `${JSON.stringify(path)} is not in ${STORE_DIR}`)
  }
  return parseStorePathBase(path.slice(prefix.length))
}

/**
 * Accepts what a user may type for a store path: a full path (anything after the
 * top-level store entry, as in `/nix/store/<hash>-foo/bin/foo`, is dropped), a
 * basename, or a bare hash part (returned with an empty name).
 * @throws NarthexError STORE_PATH_INVALID when it is none of these.
 */
export function parseStorePathLoose(text: string): StorePath | { hashPart: string; name: '' } {
  if (isHashPart(text)) return { hashPart: text, name: '' }
  const prefix = `${STORE_DIR}/`
  const base = text.startsWith(prefix) ? text.slice(prefix.length).split('/')[0]! : text
  return parseStorePathBase(base)
}

/** Formats the basename `<hash>-<name>`. */
export function formatStorePathBase(path: StorePath): string {
  return `${path.hashPart}-${path.name}`
}

/** Formats the full path `/nix/store/<hash>-<name>`. */
export function formatStorePath(path: StorePath): string {
  return `${STORE_DIR}/${path.hashPart}-${path.name}`
}
