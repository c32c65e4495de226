/**
 * Which Nix acts as the client in end-to-end tests, and the facts that differ between the client
 * versions the tests run against (Debian bookworm's Nix 2.8 and trixie's 2.26).
 *
 * The machine's `nix` (on PATH) always makes the upstream caches: it builds, signs and writes
 * `file://` caches. The client — the `nix` that substitutes from narthex and pushes to it — is the
 * same one unless `NARTHEX_TEST_NIX` names a directory holding another client's `nix`,
 * `nix-store` and `nix-hash` (scripts/nix-root.sh prints one for Nix 2.26).
 *
 * @module
 */
import { accessSync, constants } from 'node:fs'
import { join } from 'node:path'

/** The directory of the client's tools from `NARTHEX_TEST_NIX`, or `undefined` for the machine's own. */
export const clientNixDir: string | undefined = process.env.NARTHEX_TEST_NIX || undefined

/**
 * The command to run the client's `tool` (`nix`, `nix-store`, `nix-hash`, …).
 *
 * @returns `DIR/tool` with `NARTHEX_TEST_NIX=DIR`, else `tool` (found on PATH).
 */
export function clientCommand(tool: string): string {
  return clientNixDir === undefined ? tool : join(clientNixDir, tool)
}

/**
 * Checks that the client named by `NARTHEX_TEST_NIX` can run.
 *
 * @throws Error when `NARTHEX_TEST_NIX` is set but holds no executable `nix`: a pass meant for
 *   another client must never quietly run (or skip) with the machine's own.
 */
export function checkClientNix(): void {
  if (clientNixDir === undefined) return
  try {
    accessSync(join(clientNixDir, 'nix'), constants.X_OK)
  } catch {
    throw new Error(`NARTHEX_TEST_NIX=${clientNixDir} holds no executable nix (make it with scripts/nix-root.sh)`)
  }
}

/**
 * What the client prints when it refuses a path, as patterns matching every tested version.
 * Nix 2.26 words them differently from 2.8 (and drops HTTP reason phrases).
 */
export const CLIENT_REFUSALS = {
  /** `nix copy` of a path no trusted key signed. 2.8: "lacks a valid signature"; 2.26: "lacks a signature by a trusted key". */
  untrustedCopy: /lacks a valid signature|lacks a signature by a trusted key/,
  /** Substitution while building (`nix-store -r`) skipping an untrusted path. 2.8: "is not signed by any of the keys"; 2.26: "it's not signed by any of the keys". */
  untrustedSubstitute: /(is|it's) not signed by any of the keys/,
  /** File contents that do not match the signed NarHash, in both versions. */
  hashMismatch: /hash mismatch/,
} as const

/** A subset of one entry of `nix path-info --json`, the same for every tested version. */
export interface PathInfo {
  path: string
  /** SRI form, e.g. `sha256-…=` (path-info prints SRI here, unlike narinfo files). */
  narHash: string
  narSize: number
  references: string[]
  signatures?: string[]
}

/**
 * Parses `nix path-info --json`: an array of entries each naming its `path` (Nix 2.8), or an
 * object keyed by path (Nix 2.26).
 *
 * @returns the entries in the order printed.
 * @throws Error on any other shape, or on a path Nix reports as invalid (`null`).
 */
export function parsePathInfoJson(stdout: string): PathInfo[] {
  const parsed: unknown = JSON.parse(stdout)
  if (Array.isArray(parsed)) return parsed as PathInfo[]
  if (parsed === null || typeof parsed !== 'object') throw new Error(`unexpected nix path-info --json output: ${stdout.slice(0, 200)}`)
  return Object.entries(parsed as Record<string, Omit<PathInfo, 'path'> | null>).map(([path, info]) => {
    if (info === null) throw new Error(`nix path-info: ${path} is not valid`)
    return { ...info, path }
  })
}
