/**
 * `nix-cache-info`: the `Key: value` file at the root of a binary cache.
 */
import { STORE_DIR } from './store-path.js'

/** What a binary cache says about itself. */
export interface CacheInfo {
  readonly storeDir: string
  readonly wantMassQuery: boolean
  /** Lower is preferred; cache.nixos.org says 40. */
  readonly priority?: number
}

/** Writes `nix-cache-info` as Nix's own binary caches do. */
export function formatCacheInfo(info: CacheInfo): string {
  let out = `StoreDir: ${info.storeDir}\nWantMassQuery: ${info.wantMassQuery ? 1 : 0}\n`
  if (info.priority !== undefined) out += `Priority: ${info.priority}\n`
  return out
}

/** Reads `nix-cache-info`; unknown keys are ignored and missing ones take Nix's defaults. */
export function parseCacheInfo(text: string): CacheInfo {
  let storeDir = STORE_DIR
  let wantMassQuery = false
  let priority: number | undefined
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const key = line.slice(0, colon).trim()
    const value = line.slice(colon + 1).trim()
    if (key === 'StoreDir') storeDir = value
    else if (key === 'WantMassQuery') wantMassQuery = value === '1'
    else if (key === 'Priority' && /^[0-9]+$/.test(value)) priority = Number(value)
  }
  return { storeDir, wantMassQuery, ...(priority !== undefined ? { priority } : {}) }
}
