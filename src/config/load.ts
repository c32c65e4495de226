/**
 * Reads and validates the YAML configuration file.
 */
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { NarthexError } from '../errors.js'
import { listen } from './fields.js'
import { configSchema, type Config, type ConfigInput } from './schema.js'

/** Settings given on the command line, which take the place of the file's. */
export interface ConfigOverrides {
  /** `--data DIR`: also moves what defaults to a place in the data directory (the signing key). */
  readonly dataDir?: string | undefined
  /** `--listen HOST:PORT`. */
  readonly listen?: string | undefined
}

/**
 * Validates an already-parsed config object, applies `overrides`, and resolves
 * relative paths against `baseDir` (the working directory, so `./var` means the
 * same thing on the command line and in the file). Defaults that live in the
 * data directory (`signingKeyFile`) follow the data directory in effect.
 * @throws NarthexError CONFIG_INVALID naming each bad field.
 */
export function buildConfig(raw: unknown, baseDir: string, source?: string, overrides: ConfigOverrides = {}): Config {
  if (overrides.listen !== undefined && !listen.safeParse(overrides.listen).success) {
    throw new NarthexError('CONFIG_INVALID', `--listen: expected HOST:PORT (a port up to 65535), got ${JSON.stringify(overrides.listen)}`)
  }
  const result = configSchema.safeParse(raw ?? {})
  if (!result.success) {
    const where = source ? `${source}: ` : ''
    // An unknown key is reported at its own path, so the message names it.
    const issues = result.error.issues.flatMap((issue) =>
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((key) => ({ path: [...issue.path, key], message: 'unknown key' }))
        : [{ path: issue.path, message: issue.message }],
    )
    const lines = issues.map((issue) => `  ${issue.path.length > 0 ? issue.path.join('.') : '(top level)'}: ${issue.message}`)
    throw new NarthexError('CONFIG_INVALID', `${where}invalid configuration\n${lines.join('\n')}`, {
      detail: { issues: issues.map((i) => ({ path: i.path.join('.'), message: i.message })) },
    })
  }
  const input: ConfigInput = {
    ...result.data,
    ...(overrides.dataDir ? { dataDir: overrides.dataDir } : {}),
    ...(overrides.listen ? { listen: overrides.listen } : {}),
  }
  return finishConfig(input, baseDir, source)
}

function finishConfig(input: ConfigInput, baseDir: string, source?: string): Config {
  const dataDir = resolve(baseDir, input.dataDir)
  const given = input.signingKeyFile === undefined ? [] : Array.isArray(input.signingKeyFile) ? input.signingKeyFile : [input.signingKeyFile]
  const signingKeyFiles = given.length > 0 ? given.map((f) => resolve(baseDir, f)) : [join(dataDir, 'narthex.key')]
  return {
    ...input,
    dataDir,
    signingKeyFile: signingKeyFiles[0],
    signingKeyFiles,
    // Without rules, every upstream may supply every path, in config order, with one signature.
    rules: input.rules ?? [{ match: ['*'], upstreams: input.upstreams.map((u) => u.name), minSignatures: 1, onConflict: 'priority' }],
    // Secret files are named like every other path: relative to the working directory.
    upstreams: input.upstreams.map((u) => ({
      ...u,
      ...(u.netrcFile !== undefined ? { netrcFile: resolve(baseDir, u.netrcFile) } : {}),
      ...(u.bearerTokenFile !== undefined ? { bearerTokenFile: resolve(baseDir, u.bearerTokenFile) } : {}),
    })),
    access: { ...input.access, tokens: input.access.tokens.map((t) => ({ ...t, secretFile: resolve(baseDir, t.secretFile) })) },
    ...(source ? { source } : {}),
  }
}

/**
 * Loads the config file at `file`, with command-line `overrides` applied (see {@link buildConfig}).
 * @throws NarthexError CONFIG_INVALID when it cannot be read, is not YAML, or is invalid.
 */
export function loadConfig(file: string, baseDir = process.cwd(), overrides: ConfigOverrides = {}): Config {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `${file}: cannot read the configuration (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err })
  }
  let raw: unknown
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true })
  } catch (err) {
    const msg = err instanceof YAMLParseError ? err.message : String(err)
    throw new NarthexError('CONFIG_INVALID', `${file}: not valid YAML: ${msg}`, { cause: err })
  }
  return buildConfig(raw, baseDir, file, overrides)
}
