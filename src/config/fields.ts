/**
 * The configuration's field types: sizes, public keys, listen addresses, names and
 * upstream URLs, each refused with a message that says what is wrong.
 */
import { z } from 'zod'
import { parsePublicKey, parseS3Url } from '../protocol/index.js'

const SIZE_UNITS: Record<string, number> = {
  '': 1, B: 1,
  K: 1024, KB: 1000, KIB: 1024,
  M: 1024 ** 2, MB: 1000 ** 2, MIB: 1024 ** 2,
  G: 1024 ** 3, GB: 1000 ** 3, GIB: 1024 ** 3,
  T: 1024 ** 4, TB: 1000 ** 4, TIB: 1024 ** 4,
}

/** Parses a size such as `50GiB`, `512 MB` or `1048576` into bytes; undefined when malformed. */
export function parseByteSize(text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isSafeInteger(text) && text >= 0 ? text : undefined
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$/.exec(text)
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined
  if (!m || unit === undefined) return undefined
  // Past 2^53 a byte count is no longer exact (and "9…9" with 400 digits is Infinity).
  const bytes = Math.floor(Number(m[1]) * unit)
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

export const byteSize = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseByteSize(v)
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (use e.g. "50GiB")` })
    return z.NEVER
  }
  return n
})

export const publicKey = z.string().superRefine((v, ctx) => {
  try {
    parsePublicKey(v)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

export const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, 'expected HOST:PORT')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'the port is above 65535')

export const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, _ . - only')

/** zod's check: an http(s) scheme followed by `//` and a host (`https:x` is not a URL here). */
const httpUrl = z.url({ protocol: /^https?$/ })

/** True when a URL has blanks or control characters: the URL parser drops leading and trailing ones silently. */
function hasBlanks(u: string): boolean {
  // Unicode blanks too (a no-break space, a byte-order mark): zod's URL check trims them before it parses.
  return /[\s\p{Cc}\p{Cf}]/u.test(u)
}

/** An http(s) URL without blanks or credentials (they would show on the status page and in logs). */
export function checkHttpUrl(u: string, ctx: z.RefinementCtx, credentials: string, expected = 'expected an http:// or https:// URL'): void {
  if (hasBlanks(u)) return ctx.addIssue({ code: 'custom', message: 'a URL has no spaces, tabs or control characters' })
  const parsed = URL.parse(u)
  if (parsed === null || !httpUrl.safeParse(u).success) return ctx.addIssue({ code: 'custom', message: expected })
  if (parsed.username !== '' || parsed.password !== '') ctx.addIssue({ code: 'custom', message: credentials })
}

/** Nix's `s3://bucket?region=…&endpoint=…&profile=…`; its endpoint shows on the status page, so it carries no credentials either. */
export function checkS3Url(u: string, ctx: z.RefinementCtx): void {
  if (hasBlanks(u)) return ctx.addIssue({ code: 'custom', message: 'a URL has no spaces, tabs or control characters' })
  try {
    const loc = parseS3Url(u)
    if (loc.endpoint !== undefined) checkHttpUrl(loc.endpoint, ctx, 'an s3:// endpoint carries no credentials; they come from the AWS chain (environment, shared credentials file, profile)')
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `invalid s3:// URL: ${(err as Error).message}` })
  }
}
