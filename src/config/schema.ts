/**
 * The configuration file's shape, validated with zod. Unknown keys are errors,
 * and cross-field rules (upstream names, keys, reachable rules, quorum sizes) are
 * checked here so that a bad config never starts a server.
 */
import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { isHashPart, isKeyName, normalisePrefix, parsePublicKey, parseStorePath, signatureKeyName } from '../protocol/index.js'
import { byteSize, checkHttpUrl, checkS3Url, listen, name, publicKey } from './fields.js'

export { parseByteSize } from './fields.js'

/** `workers: auto`: one worker per core, up to 16; none on a single core, where they would only add a hop. */
function autoWorkers(): number {
  const cores = availableParallelism()
  return cores > 1 ? Math.min(cores, 16) : 0
}

const upstream = z.strictObject({
  name,
  url: z
    .string()
    .superRefine((u, ctx) => {
      if (/^s3:\/\//i.test(u)) return checkS3Url(u, ctx)
      checkHttpUrl(u, ctx, 'put credentials in netrcFile or bearerTokenFile, not in the URL', 'expected an http://, https:// or s3:// URL')
    })
    .transform((u) => u.replace(/\/+$/, '')),
  /** A netrc file (`machine HOST login L password P`) whose entry for the URL's host is sent as Basic auth. */
  netrcFile: z.string().min(1).optional(),
  /** A file holding one token, sent as `Authorization: Bearer`. */
  bearerTokenFile: z.string().min(1).optional(),
  publicKeys: z.array(publicKey).default([]),
  /** Deadline for a narinfo answer, and the idle limit between bytes of a NAR. */
  timeoutMs: z.number().int().min(100).max(600_000).default(5000),
  connectTimeoutMs: z.number().int().min(100).max(600_000).optional(),
  /** Extra attempts after a transient failure (connection error, 5xx, 429). */
  retries: z.number().int().min(0).max(10).default(2),
  maxConnections: z.number().int().min(1).max(1024).default(32),
  /** A NAR download slower than this over `speedWindowMs` is abandoned (a trickle never ends otherwise). */
  minBytesPerSecond: z.number().int().min(0).default(1024),
  /** The window over which `minBytesPerSecond` is judged. */
  speedWindowMs: z.number().int().min(100).max(600_000).default(30_000),
  /** After this many failures in a row the upstream is skipped for `downForMs`. */
  failureThreshold: z.number().int().min(1).default(3),
  downForMs: z.number().int().min(0).default(10_000),
})

/** A rule's `match`: a glob on the name part, an exact store path, or a hash part. */
const matchPattern = z.string().min(1).superRefine((v, ctx) => {
  if (v.startsWith('/')) {
    try {
      parseStorePath(v)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
    }
  } else if (v.includes('/')) {
    ctx.addIssue({ code: 'custom', message: 'a glob matches the name part only; it may not contain "/"' })
  } else if (!/^[0-9A-Za-z+\-._?=*[\]!]+$/.test(v)) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is neither a glob on a store path name, a store path nor a hash part` })
  }
})

const rule = z
  .strictObject({
    match: z.union([matchPattern, z.array(matchPattern).min(1)]).transform((m) => (Array.isArray(m) ? m : [m])),
    upstreams: z.array(name),
    /** Default 1; a deny rule (no upstreams) needs none, and any value means nothing there. */
    minSignatures: z.number().int().min(0).optional(),
    trustedKeys: z.array(publicKey).optional(),
    /** What validly signed answers with different fingerprints do: `priority` admits the rule's choice, `refuse` refuses. */
    onConflict: z.enum(['priority', 'refuse']).default('priority'),
  })
  .transform((r) => ({ ...r, minSignatures: r.minSignatures ?? (r.upstreams.length > 0 ? 1 : 0) }))

/** A `deny.keys` entry: a public key `name:base64` (its bytes, under any name) or a bare key name. */
const denyKey = z.string().superRefine((v, ctx) => {
  if (!v.includes(':')) {
    if (!isKeyName(v)) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is neither a public key (name:base64) nor a key name` })
    return
  }
  try {
    parsePublicKey(v)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/** A `deny.paths` entry: a store path or a bare 32-character hash part. */
const denyPath = z.string().superRefine((v, ctx) => {
  if (v.startsWith('/')) {
    try {
      parseStorePath(v)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
    }
  } else if (!isHashPart(v)) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is neither a store path (/nix/store/<hash>-<name>) nor a 32-character hash part` })
  }
})

const deny = z.strictObject({
  /** Keys whose signatures never count: not for any rule, push or import. */
  keys: z.array(denyKey).default([]),
  /** Paths refused whatever the rules say. */
  paths: z.array(denyPath).default([]),
})

/** A scope a client token grants. */
const scope = z.enum(['read', 'push'])

const accessToken = z.strictObject({
  /** Shown in logs and the audit log instead of the secret. */
  name,
  /** A file holding the token (at least 16 characters). */
  secretFile: z.string().min(1),
  scopes: z.array(scope).min(1),
  /** Globs on store path names this token may push; every name when absent. */
  pushMatch: z.array(matchPattern).min(1).optional(),
})

const access = z.strictObject({
  /** `public`: anyone may read (as before); `tokens`: every request but /healthz needs a token with the read scope. */
  read: z.enum(['public', 'tokens']).default('public'),
  tokens: z.array(accessToken).default([]),
})

const push = z
  .strictObject({
    /** Push tokens written inline (kept working; `access.tokens` with the push scope is the newer way). */
    tokens: z.array(z.string().min(16, 'push tokens must have at least 16 characters')).default([]),
    /** Pushed narinfos must be signed by at least `minSignatures` of these keys. */
    publicKeys: z.array(publicKey).default([]),
    minSignatures: z.number().int().min(0).default(1),
    /** Largest NAR file accepted in one push. */
    maxNarSize: byteSize.default(16 * 1024 ** 3),
  })
  .superRefine((p, ctx) => {
    const names = new Set(p.publicKeys.map(signatureKeyName))
    if (p.minSignatures > names.size) {
      ctx.addIssue({ code: 'custom', path: ['minSignatures'], message: `minSignatures ${p.minSignatures} exceeds the ${names.size} push key(s)` })
    }
  })

const importSettings = z
  .strictObject({
    /** Imported narinfos must be signed by at least `minSignatures` of these keys (e.g. the connected narthex's). */
    publicKeys: z.array(publicKey).min(1),
    minSignatures: z.number().int().min(0).default(1),
  })
  .superRefine((p, ctx) => {
    const names = new Set(p.publicKeys.map(signatureKeyName))
    if (p.minSignatures > names.size) {
      ctx.addIssue({ code: 'custom', path: ['minSignatures'], message: `minSignatures ${p.minSignatures} exceeds the ${names.size} import key(s)` })
    }
  })

/** The configuration schema (before defaults that depend on other fields). */
export const configSchema = z
  .strictObject({
    listen: listen.default('127.0.0.1:5557'),
    dataDir: z.string().min(1).default('./var'),
    /**
     * narthex's secret key file, or a list of them (key rotation): every listed key signs what
     * narthex serves; the first is created when missing, the others must exist.
     */
    signingKeyFile: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    /** Name of the signing key created on first start. */
    signingKeyName: name.default('narthex-1'),
    priority: z.number().int().min(0).max(1000).default(30),
    upstreams: z.array(upstream).default([]),
    rules: z.array(rule).optional(),
    storage: z
      .strictObject({
        maxSize: byteSize.optional(),
        /** A bucket that nodes share as a Nix binary cache (docs/STORAGE-S3.md); none: the data directory alone. */
        s3: z
          .strictObject({
            bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected an S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)'),
            prefix: z.string().default('').transform((p, ctx) => {
              try {
                return normalisePrefix(p)
              } catch (err) {
                ctx.addIssue({ code: 'custom', message: (err as Error).message })
                return z.NEVER
              }
            }),
            endpoint: z
              .string()
              .superRefine((u, ctx) => checkHttpUrl(u, ctx, 'an endpoint carries no credentials; they come from the AWS chain (environment, shared credentials file, profile)'))
              .transform((u) => u.replace(/\/+$/, ''))
              .optional(),
            region: z.string().min(1).optional(),
            /** A profile of the shared credentials file; credentials never go in this file. */
            profile: z.string().min(1).optional(),
            /** Path-style requests (`endpoint/bucket/key`); default: whenever an endpoint is set. */
            forcePathStyle: z.boolean().optional(),
          })
          .transform((s) => ({ ...s, forcePathStyle: s.forcePathStyle ?? s.endpoint !== undefined }))
          .optional(),
      })
      .default({}),
    cache: z
      .strictObject({
        /** How long an "absent" answer is remembered (Nix clients remember theirs for an hour). */
        negativeTtlMs: z.number().int().min(0).default(60_000),
        /** How long a "could not ask" answer is remembered. */
        unavailableTtlMs: z.number().int().min(0).default(5_000),
        narinfoLruEntries: z.number().int().min(0).default(50_000),
      })
      .default({ negativeTtlMs: 60_000, unavailableTtlMs: 5_000, narinfoLruEntries: 50_000 }),
    prefetch: z
      .strictObject({
        /** Fetch the narinfos of an admitted path's references ahead of the client. */
        references: z.boolean().default(true),
        /**
         * Start downloading a path's NAR as soon as a client is served its narinfo from a miss: Nix
         * asks for narinfos only of paths it lacks, and asks for their NARs once it has the closure.
         */
        nars: z.boolean().default(true),
        maxInFlight: z.number().int().min(1).max(1024).default(16),
        /** NAR downloads prefetch runs at once. */
        maxNarsInFlight: z.number().int().min(1).max(1024).default(8),
        /** Bytes of prefetched NARs no client has asked for yet (downloading or stored) beyond which prefetch waits. */
        maxBytesAhead: byteSize.default(256 * 1024 ** 2),
      })
      .default({ references: true, nars: true, maxInFlight: 16, maxNarsInFlight: 8, maxBytesAhead: 256 * 1024 ** 2 }),
    deny: deny.default({ keys: [], paths: [] }),
    push: push.optional(),
    access: access.default({ read: 'public', tokens: [] }),
    import: importSettings.optional(),
    /** The URL clients reach narthex at (behind a reverse proxy, a DNS name), shown on the status page. */
    publicUrl: z
      .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
      .transform((u) => u.replace(/\/+$/, ''))
      .optional(),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One line per request at this level (`off`: none; at tens of thousands of requests a second a line per hit is not free). */
        requests: z.enum(['off', 'info', 'debug']).default('off'),
        /** `auto`: human-readable on a terminal, JSON lines otherwise. */
        format: z.enum(['auto', 'json', 'pretty']).default('auto'),
      })
      .default({ level: 'info', requests: 'off', format: 'auto' }),
    /** Worker processes for the hot path; `auto`: one per core (none on a single core). */
    workers: z
      .union([z.literal('auto'), z.number().int().min(0).max(64)])
      .default(0)
      .transform((w) => (w === 'auto' ? autoWorkers() : w)),
  })
  .superRefine((cfg, ctx) => {
    const counted = keyCounter(cfg.deny)
    const names = new Set<string>()
    cfg.upstreams.forEach((u, i) => {
      if (names.has(u.name)) ctx.addIssue({ code: 'custom', path: ['upstreams', i, 'name'], message: `duplicate upstream name ${JSON.stringify(u.name)}` })
      names.add(u.name)
      if (u.netrcFile !== undefined && u.bearerTokenFile !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', i], message: 'give netrcFile or bearerTokenFile, not both' })
      }
      if (/^s3:\/\//i.test(u.url) && (u.netrcFile !== undefined || u.bearerTokenFile !== undefined)) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', i, u.netrcFile !== undefined ? 'netrcFile' : 'bearerTokenFile'], message: 'an s3:// upstream takes no netrcFile or bearerTokenFile: its credentials come from the AWS chain (AWS_* environment variables, the shared credentials file, a profile= in the URL)' })
      }
    })
    checkAccess(cfg, ctx)
    let catchAllAt = -1
    cfg.rules?.forEach((r, i) => {
      if (catchAllAt >= 0) {
        ctx.addIssue({ code: 'custom', path: ['rules', i], message: `unreachable: rule ${catchAllAt} matches every path ("*") and comes first` })
      }
      if ((Array.isArray(r.match) ? r.match : [r.match]).includes('*') && catchAllAt < 0) catchAllAt = i
      ;(Array.isArray(r.upstreams) ? r.upstreams : []).forEach((u, j) => {
        if (!names.has(u)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'upstreams', j], message: `unknown upstream ${JSON.stringify(u)}` })
      })
      if (new Set(r.upstreams).size !== r.upstreams.length) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'upstreams'], message: 'an upstream is listed twice' })
      }
      const keys = r.trustedKeys ?? cfg.upstreams.filter((u) => r.upstreams.includes(u.name)).flatMap((u) => u.publicKeys)
      const { count, denied } = counted(keys)
      // A deny rule asks no upstream: there is nothing to sign.
      if (r.upstreams.length > 0 && r.minSignatures > count) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'minSignatures'],
          message: `minSignatures ${r.minSignatures} exceeds the ${count} distinct trusted key(s) of this rule${denied ? ` (${denied} on deny.keys)` : ''}`,
        })
      }
    })
    for (const section of ['push', 'import'] as const) {
      const settings = cfg[section]
      if (!settings) continue
      const { count, denied } = counted(settings.publicKeys)
      if (denied > 0 && settings.minSignatures > count) {
        ctx.addIssue({
          code: 'custom',
          path: [section, 'minSignatures'],
          message: `minSignatures ${settings.minSignatures} exceeds the ${count} ${section} key(s) not on deny.keys`,
        })
      }
    }
  })

/** Cross-field rules of `access` and `push`. */
function checkAccess(cfg: { access: z.infer<typeof access>; push?: z.infer<typeof push> | undefined }, ctx: z.RefinementCtx): void {
  const tokens = Array.isArray(cfg.access?.tokens) ? cfg.access.tokens : []
  const seen = new Set<string>()
  tokens.forEach((t, i) => {
    if (seen.has(t.name)) ctx.addIssue({ code: 'custom', path: ['access', 'tokens', i, 'name'], message: `duplicate token name ${JSON.stringify(t.name)}` })
    seen.add(t.name)
    const scopes: string[] = Array.isArray(t.scopes) ? t.scopes : []
    if (t.pushMatch !== undefined && !scopes.includes('push')) {
      ctx.addIssue({ code: 'custom', path: ['access', 'tokens', i, 'pushMatch'], message: 'pushMatch needs the push scope' })
    }
    if (scopes.includes('push') && !cfg.push) {
      ctx.addIssue({ code: 'custom', path: ['access', 'tokens', i, 'scopes'], message: 'the push scope needs a push section (publicKeys, minSignatures)' })
    }
  })
  const inline = Array.isArray(cfg.push?.tokens) ? cfg.push.tokens : []
  if (cfg.access?.read === 'tokens' && inline.length > 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['push', 'tokens'],
      message:
        'with access.read: tokens, pushers must read too: move each push token into a file and list it as ' +
        '"access: { tokens: [{ name: ci, secretFile: /etc/narthex/tokens/ci, scopes: [read, push] }] }"',
    })
  }
  if (cfg.push && inline.length === 0 && !tokens.some((t) => Array.isArray(t.scopes) && t.scopes.includes('push'))) {
    ctx.addIssue({ code: 'custom', path: ['push'], message: 'no token may push: give push.tokens or an access.tokens entry with the push scope' })
  }
}

/**
 * Counts the distinct key names among `keys` that `deny` leaves, and how many
 * were denied. Tolerates malformed entries (reported at their own field).
 */
function keyCounter(deny: { keys: readonly string[] } | undefined) {
  const names = new Set<string>()
  const bytes = new Set<string>()
  const denied: readonly string[] = Array.isArray(deny?.keys) ? deny.keys : []
  for (const k of denied) {
    if (!k.includes(':')) names.add(k)
    else bytes.add(k.slice(k.indexOf(':') + 1).trim())
  }
  return (keys: readonly string[] | undefined): { count: number; denied: number } => {
    const list: readonly string[] = Array.isArray(keys) ? keys : []
    const kept = list.filter((k) => !names.has(signatureKeyName(k)) && !bytes.has(k.slice(k.indexOf(':') + 1).trim()))
    return { count: new Set(kept.map(signatureKeyName)).size, denied: list.length - kept.length }
  }
}

/** A validated configuration, relative paths not yet resolved. */
export type ConfigInput = z.infer<typeof configSchema>
/** One upstream cache. */
export type UpstreamConfig = ConfigInput['upstreams'][number]
/** One policy rule. */
export type RuleConfig = z.infer<typeof rule>
/** Push settings. */
export type PushConfig = z.infer<typeof push>
/** Client access: who may read and push. */
export type AccessConfig = z.infer<typeof access>
/** One client token of `access.tokens`. */
export type AccessTokenConfig = AccessConfig['tokens'][number]
/** The deny lists. */
export type DenyConfig = z.infer<typeof deny>

/** A configuration ready to use: paths absolute, rules filled in. */
export interface Config extends Omit<ConfigInput, 'rules' | 'signingKeyFile'> {
  readonly rules: RuleConfig[]
  /** The first signing key file (created on first start when missing). */
  readonly signingKeyFile: string
  /** Every signing key file, in order, the first being {@link Config.signingKeyFile}; each key signs what narthex serves. */
  readonly signingKeyFiles: readonly string[]
  /** Where it was read from (for messages), or undefined when built in code. */
  readonly source?: string
}
