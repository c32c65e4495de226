/**
 * Client access: which requests need a token, and which token a request
 * carries. Nix sends credentials only from a netrc file, as Basic auth, so a
 * token is accepted as the Basic password (any login) and as `Authorization:
 * Bearer`. Tokens are compared as SHA-256 digests in constant time against
 * every configured token, and only their names ever leave this file.
 *
 * Used by every front door: the single-process server, the core and each
 * worker front of a cluster.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { NarthexError } from '../errors.js'
import { readSecretFile, secretFileModeWarning } from '../secret-file.js'
import { requestPath } from './http-util.js'
import { respondStatus } from './respond-error.js'

/** What a token may do. */
export type Scope = 'read' | 'push'

/** Where a token comes from: a file (`access.tokens`) or the config itself (`push.tokens`). */
export interface TokenSource {
  readonly name: string
  readonly secretFile?: string | undefined
  readonly secret?: string | undefined
  readonly scopes: readonly Scope[]
  /** Store path name globs, store paths or hash parts the token may push; any when absent. */
  readonly pushMatch?: readonly string[] | undefined
}

/** The token a request presented: its name and rights, never its secret. */
export interface ClientToken {
  readonly name: string
  readonly scopes: ReadonlySet<Scope>
  readonly pushMatch: readonly string[] | undefined
}

/** A refused request: the status and the body to send. */
export interface Refusal {
  readonly status: 401 | 403
  readonly message: string
  /** The name of the token that lacked a scope (403), for the log. */
  readonly token?: string
}

/** Longer Authorization headers are refused unread (a token is far shorter). */
export const MAX_AUTHORIZATION_BYTES = 4096

/** The minimum length of a client token. */
export const MIN_TOKEN_LENGTH = 16

const CHALLENGE = { 'www-authenticate': 'Basic realm="narthex"' }
/** One body for every request without valid credentials, so none reveals whether a path exists. */
const UNAUTHORIZED: Refusal = { status: 401, message: 'authentication required' }

interface Loaded extends ClientToken {
  readonly digest: Buffer
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest()

/**
 * The secret an Authorization header presents: the Bearer token, or the
 * password of Basic credentials. Undefined for a missing, overlong, malformed
 * or unknown-scheme header.
 */
export function presentedSecret(header: string | undefined): string | undefined {
  if (header === undefined || header.length > MAX_AUTHORIZATION_BYTES) return undefined
  const m = /^([A-Za-z]+) +([^\s]+) *$/.exec(header)
  if (!m) return undefined
  const scheme = m[1].toLowerCase()
  if (scheme === 'bearer') return m[2]
  if (scheme !== 'basic' || !/^[A-Za-z0-9+/]+={0,2}$/.test(m[2])) return undefined
  const decoded = Buffer.from(m[2], 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  const password = decoded.slice(colon + 1)
  return password === '' ? undefined : password
}

/** Who may read and push, and the tokens that grant it. */
export class AccessControl {
  readonly #sources: readonly TokenSource[]
  #tokens: readonly Loaded[] = []
  /** Warnings of the last load (secret files readable by others), for the log. */
  warnings: readonly string[] = []

  /**
   * @param privateRead true for `access.read: tokens`: every request but
   *   `/healthz` needs a token with the read scope.
   * @throws NarthexError CONFIG_INVALID when a secret file cannot be read, is
   *   empty or holds a token shorter than {@link MIN_TOKEN_LENGTH}.
   */
  constructor(
    readonly privateRead: boolean,
    sources: readonly TokenSource[],
  ) {
    this.#sources = sources
    this.reload()
  }

  /** True when some token may push. */
  get anyPushToken(): boolean {
    return this.#tokens.some((t) => t.scopes.has('push'))
  }

  /**
   * Reads the secret files again (at start and on SIGHUP). On an error the
   * tokens held so far stay in use.
   * @returns warnings for the log (secret files readable by others).
   * @throws NarthexError CONFIG_INVALID as the constructor.
   */
  reload(): readonly string[] {
    const warnings: string[] = []
    const tokens = this.#sources.map((s): Loaded => {
      const what = `access token ${s.name}`
      let secret = s.secret
      if (s.secretFile !== undefined) {
        secret = readSecretFile(s.secretFile, what)
        const w = secretFileModeWarning(s.secretFile)
        if (w) warnings.push(w)
      }
      if (secret === undefined || secret.length < MIN_TOKEN_LENGTH) {
        throw new NarthexError('CONFIG_INVALID', `${what}: a token must have at least ${MIN_TOKEN_LENGTH} characters`)
      }
      return { name: s.name, scopes: new Set(s.scopes), pushMatch: s.pushMatch, digest: sha256(secret) }
    })
    this.#tokens = tokens
    this.warnings = warnings
    return warnings
  }

  /** The token an Authorization header carries, if it is one of ours. */
  identify(header: string | undefined): ClientToken | undefined {
    // Every token is compared, whatever matched first: the time taken says nothing about which.
    const digest = sha256(presentedSecret(header) ?? '')
    let found: Loaded | undefined
    for (const t of this.#tokens) if (timingSafeEqual(digest, t.digest) && found === undefined) found = t
    return found
  }

  /**
   * The check every request passes first. With public reading everything
   * passes here (pushes are checked by {@link authorizePush}). With private
   * reading, `/healthz` passes, a request without a valid token gets 401, and a
   * GET or HEAD needs the read scope.
   */
  gate(req: IncomingMessage): { ok: true; token: ClientToken | undefined } | { ok: false; refusal: Refusal } {
    if (!this.privateRead || requestPath(req) === '/healthz') return { ok: true, token: undefined }
    const token = this.identify(req.headers.authorization)
    if (!token) return { ok: false, refusal: UNAUTHORIZED }
    const reading = req.method === 'GET' || req.method === 'HEAD'
    if (reading && !token.scopes.has('read')) return { ok: false, refusal: { status: 403, message: `token ${token.name} lacks the read scope`, token: token.name } }
    return { ok: true, token }
  }

  /** The token allowed to push with this request, or the refusal. */
  authorizePush(req: IncomingMessage): { ok: true; token: ClientToken } | { ok: false; refusal: Refusal } {
    const token = this.identify(req.headers.authorization)
    if (!token) return { ok: false, refusal: { status: 401, message: 'pushing needs a token (Authorization: Bearer, or a netrc password)' } }
    if (!token.scopes.has('push')) return { ok: false, refusal: { status: 403, message: `token ${token.name} lacks the push scope`, token: token.name } }
    return { ok: true, token }
  }
}

/** Sends a refusal; a 401 carries the Basic challenge Nix answers from its netrc file. */
export function sendRefusal(res: ServerResponse, refusal: Refusal): void {
  // A request body (a push) is not read: close the connection rather than drain it.
  const method = res.req.method
  if (method !== 'GET' && method !== 'HEAD') res.shouldKeepAlive = false
  respondStatus(res, refusal.status, refusal.message, refusal.status === 401 ? CHALLENGE : {})
}
