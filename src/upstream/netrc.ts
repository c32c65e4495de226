/**
 * A strict parser for the netrc format that Nix (through curl) reads:
 * `machine HOST login L password P`, `default login L password P`, tokens
 * separated by any white space, `account` accepted and ignored, `macdef`
 * bodies skipped up to the next blank line, and double-quoted tokens with
 * backslash escapes as curl reads them. Anything else is an error naming the
 * line, never a silent guess: a typo in a credentials file must not send
 * narthex to an upstream without its credentials.
 */
import { NarthexError } from '../errors.js'

/** One `machine` (or `default`, with `machine` undefined) entry. */
export interface NetrcEntry {
  readonly machine: string | undefined
  readonly login: string | undefined
  readonly password: string | undefined
}

interface Token {
  readonly text: string
  readonly line: number
}

/** Splits netrc text into tokens; `macdef` bodies are dropped here, since only a blank line ends them. */
function tokenize(text: string, source: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  let line = 1
  const bad = (why: string): never => {
    throw new NarthexError('CONFIG_INVALID', `${source}: line ${line}: ${why}`)
  }
  while (i < text.length) {
    const c = text[i]
    if (c === '\n') {
      line++
      i++
    } else if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') i++
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]))) {
      while (i < text.length && text[i] !== '\n') i++
    } else if (c === '"') {
      let value = ''
      const start = line
      i++
      for (;;) {
        if (i >= text.length || text[i] === '\n') bad('unterminated quoted token')
        const q = text[i]
        if (q === '"') break
        if (q === '\\' && i + 1 < text.length) {
          const e = text[i + 1]
          value += e === 'n' ? '\n' : e === 'r' ? '\r' : e === 't' ? '\t' : e
          i += 2
        } else {
          value += q
          i++
        }
      }
      i++
      tokens.push({ text: value, line: start })
    } else {
      const start = i
      while (i < text.length && !/\s/.test(text[i])) i++
      const word = text.slice(start, i)
      tokens.push({ text: word, line })
      if (word === 'macdef') {
        // The macro's name, then its body up to an empty line.
        const end = text.indexOf('\n\n', i)
        const body = end < 0 ? text.slice(i) : text.slice(i, end)
        line += body.split('\n').length - 1
        i = end < 0 ? text.length : end
        tokens.pop()
      }
    }
  }
  return tokens
}

/**
 * Parses netrc `text` (`source` names it in errors).
 * @throws NarthexError CONFIG_INVALID on an unknown keyword, a keyword without
 *   its value, or `login`/`password` outside an entry.
 */
export function parseNetrc(text: string, source = 'netrc'): NetrcEntry[] {
  const tokens = tokenize(text, source)
  const entries: Array<{ machine: string | undefined; login: string | undefined; password: string | undefined }> = []
  let current: (typeof entries)[number] | undefined
  for (let i = 0; i < tokens.length; i++) {
    const { text: word, line } = tokens[i]
    const value = (): string => {
      const next = tokens[++i]
      if (next === undefined) throw new NarthexError('CONFIG_INVALID', `${source}: line ${line}: "${word}" needs a value`)
      return next.text
    }
    switch (word) {
      case 'machine':
        current = { machine: value().toLowerCase(), login: undefined, password: undefined }
        entries.push(current)
        break
      case 'default':
        current = { machine: undefined, login: undefined, password: undefined }
        entries.push(current)
        break
      case 'login':
      case 'password':
      case 'account': {
        if (!current) throw new NarthexError('CONFIG_INVALID', `${source}: line ${line}: "${word}" outside a machine or default entry`)
        const v = value()
        if (word === 'login') current.login = v
        else if (word === 'password') current.password = v
        break
      }
      default:
        // The token itself is not quoted: it may be a secret that lost its keyword.
        throw new NarthexError('CONFIG_INVALID', `${source}: line ${line}: unexpected token (expected machine, default, login, password, account or macdef)`)
    }
  }
  return entries
}

/**
 * The entry for `host` the way curl chooses it: the first `machine` whose name
 * equals the host (case-insensitive, without the port), else the `default`
 * entry, else none.
 */
export function netrcEntryFor(entries: readonly NetrcEntry[], host: string): NetrcEntry | undefined {
  const wanted = host.toLowerCase()
  return entries.find((e) => e.machine === wanted) ?? entries.find((e) => e.machine === undefined)
}
