/** Where the store keeps its files under the data directory, and the names it accepts there. */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { NarthexError } from '../errors.js'
import { narShardPath, parseNarFileName } from '../protocol/index.js'

/** The directories of a store and the paths of the files in them. */
export class StorePaths {
  readonly narDir: string
  readonly tmpDir: string
  /** NAR files pushed by `nix copy --to`, waiting for their narinfo. */
  readonly uploadsDir: string

  constructor(readonly dataDir: string) {
    this.narDir = join(dataDir, 'nar')
    this.tmpDir = join(dataDir, 'tmp')
    this.uploadsDir = join(dataDir, 'uploads')
  }

  /**
   * Absolute path of a NAR file in the store. Only names of the form
   * `<nix32>.nar<ext>` are accepted, so no request can reach outside `nar/`.
   * @throws NarthexError BAD_REQUEST for any other name.
   */
  narPath(fileName: string): string {
    if (!parseNarFileName(fileName)) {
      throw new NarthexError('BAD_REQUEST', `not a NAR file name: ${JSON.stringify(fileName)}`)
    }
    return join(this.narDir, narShardPath(fileName))
  }

  /**
   * Where a pushed NAR file waits for its narinfo: `uploads/<name>`, name as
   * `nix copy` sends it (`<nix32 FileHash>.nar<ext>`).
   * @throws NarthexError BAD_REQUEST for any other name.
   */
  uploadPath(fileName: string): string {
    if (!parseNarFileName(fileName)) {
      throw new NarthexError('BAD_REQUEST', `not a NAR file name: ${JSON.stringify(fileName)}`)
    }
    return join(this.uploadsDir, fileName)
  }

  /** A fresh temp file path under `tmp/` (removed at the next start if left behind). */
  tempPath(label: string): string {
    return join(this.tmpDir, `${randomBytes(8).toString('hex')}-${label.replace(/[^A-Za-z0-9.]/g, '_').slice(0, 80)}.part`)
  }
}
