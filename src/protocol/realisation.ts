/**
 * Realisations (Nix's `ca-derivations`): which store path a content-addressed
 * derivation's output was built into. A binary cache serves one per output as
 * `realisations/<id>.doi`, `id` being `sha256:<base16 hash modulo of the
 * derivation>!<output name>` (DrvOutput::to_string in realisation.cc). The file
 * is the JSON of Realisation::toJSON, dumped compactly with keys in byte order:
 *
 * ```
 * {"dependentRealisations":{ID:BASENAME,…},"id":ID,"outPath":BASENAME,"signatures":[SIG,…]}
 * ```
 * The signed fingerprint (Realisation::fingerprint) is the same dump without
 * `signatures`. Pure: no I/O.
 */
import { NarthexError } from '../errors.js'
import { signFingerprint, signatureKeyName, verifyFingerprint, type PublicKey, type SecretKey } from './signature.js'
import { formatStorePathBase, MAX_NAME_LENGTH, NAME_CHAR_CLASS, parseStorePathBase, type StorePath } from './store-path.js'

/** A parsed realisation. */
export interface Realisation {
  /** `sha256:<64 hex>!<output>`. */
  readonly id: string
  /** The output path's basename `<hash>-<name>`, as the file carries it. */
  readonly outPath: StorePath
  /** `name:base64` signatures over {@link fingerprintRealisation}. */
  readonly signatures: readonly string[]
  /** Realisations this one's build used: id → output basename. */
  readonly dependentRealisations: Readonly<Record<string, string>>
}

/** The largest `.doi` file narthex reads: a realisation is a few hundred bytes plus its dependencies. */
export const MAX_REALISATION_BYTES = 256 * 1024

/**
 * A regular-expression source matching one derivation output id, unanchored:
 * `sha256:` and the base16 hash modulo, `!`, the output name. It admits no `/`.
 */
export const DRV_OUTPUT_ID_PATTERN = `sha256:[0-9a-f]{64}!${NAME_CHAR_CLASS}{1,${MAX_NAME_LENGTH}}`

/** A derivation output id: `sha256:` and the base16 hash modulo, `!`, the output name. */
export const DRV_OUTPUT_ID = new RegExp(`^${DRV_OUTPUT_ID_PATTERN}$`)

function invalid(message: string): NarthexError {
  return new NarthexError('BAD_REQUEST', `invalid realisation: ${message}`)
}

/** True when `id` is a derivation output id as Nix writes it in realisation file names. */
export function isDrvOutputId(id: string): boolean {
  return DRV_OUTPUT_ID.test(id)
}

/**
 * Parses a `.doi` file. `signatures` and `dependentRealisations` may be absent
 * (older Nix), as Realisation::fromJSON allows.
 * @throws NarthexError BAD_REQUEST naming what is wrong (STORE_PATH_INVALID for a bad outPath).
 */
export function parseRealisation(text: string): Realisation {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw invalid('not JSON')
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw invalid('not a JSON object')
  const o = json as Record<string, unknown>
  if (typeof o.id !== 'string' || !isDrvOutputId(o.id)) throw invalid(`id ${JSON.stringify(o.id)} is not sha256:<hex>!<output>`)
  if (typeof o.outPath !== 'string') throw invalid('outPath is missing')
  const outPath = parseStorePathBase(o.outPath)
  const signatures: string[] = []
  if (o.signatures !== undefined) {
    if (!Array.isArray(o.signatures) || o.signatures.some((s) => typeof s !== 'string')) throw invalid('signatures is not a list of strings')
    signatures.push(...(o.signatures as string[]))
  }
  const dependentRealisations: Record<string, string> = {}
  if (o.dependentRealisations !== undefined) {
    const deps = o.dependentRealisations
    if (deps === null || typeof deps !== 'object' || Array.isArray(deps)) throw invalid('dependentRealisations is not an object')
    for (const [id, path] of Object.entries(deps)) {
      if (!isDrvOutputId(id)) throw invalid(`dependent id ${JSON.stringify(id)} is not sha256:<hex>!<output>`)
      if (typeof path !== 'string') throw invalid(`dependent ${id} has no path`)
      dependentRealisations[id] = formatStorePathBase(parseStorePathBase(path))
    }
  }
  return { id: o.id, outPath, signatures: [...new Set(signatures)].sort(), dependentRealisations }
}

function dependentJson(deps: Readonly<Record<string, string>>): string {
  const keys = Object.keys(deps).sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(deps[k])}`).join(',')}}`
}

/** The string a realisation signature signs: the JSON without `signatures`, keys in byte order. */
export function fingerprintRealisation(r: Pick<Realisation, 'id' | 'outPath' | 'dependentRealisations'>): string {
  return `{"dependentRealisations":${dependentJson(r.dependentRealisations)},"id":${JSON.stringify(r.id)},"outPath":${JSON.stringify(formatStorePathBase(r.outPath))}}`
}

/** The `.doi` file as Nix writes it (signatures sorted and distinct, as Nix's StringSet). */
export function formatRealisation(r: Realisation): string {
  const sigs = [...new Set(r.signatures)].sort()
  return `${fingerprintRealisation(r).slice(0, -1)},"signatures":${JSON.stringify(sigs)}}`
}

/** The signatures of `r` that verify under `keys` (by key name); others are left out, as Nix ignores them. */
export function validRealisationSignatures(r: Realisation, keys: readonly PublicKey[]): string[] {
  const fingerprint = fingerprintRealisation(r)
  return r.signatures.filter((sig) => verifyFingerprint(fingerprint, sig, keys))
}

/** The realisation with `key`'s signature added (replacing an earlier one by the same key name). */
export function signRealisation(r: Realisation, key: SecretKey): Realisation {
  const sig = signFingerprint(fingerprintRealisation(r), key)
  const others = r.signatures.filter((s) => signatureKeyName(s) !== key.name)
  return { ...r, signatures: [...others, sig].sort() }
}
