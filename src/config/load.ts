/**
 * Reads and validates the YAML configuration file.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { NarthexError } from '../errors.js'
import { configSchema, type Config, type ConfigInput } from './schema.js'

/**
 * Validates an already-parsed config object and resolves its relative paths
 * against `baseDir` (the working directory, so `./var` means the same thing on
 * the command line and in the file).
 * @throws NarthexError CONFIG_INVALID naming each bad field.
 */
export function buildConfig(raw: unknown, baseDir: string, source?: string): Config {
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
  return finishConfig(result.data, baseDir, source)
}

function finishConfig(input: ConfigInput, baseDir: string, source?: string): Config {
  const dataDir = resolve(baseDir, input.dataDir)
  return {
    ...input,
    dataDir,
    signingKeyFile: resolve(baseDir, input.signingKeyFile ?? `${dataDir}/narthex.key`),
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
 * Loads the config file at `file`.
 * @throws NarthexError CONFIG_INVALID when it cannot be read, is not YAML, or is invalid.
 */
export function loadConfig(file: string, baseDir = process.cwd()): Config {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new NarthexError('CONFIG_INVALID', `${file}: cannot read the configuration (${(err as NodeJS.ErrnoException).code ?? err})`, { cause: err })
  }
  let raw: unknown
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true })
  } catch (err) {
    const msg = err instanceof YAMLParseError ? err.message : String(err)
    throw new NarthexError('CONFIG_INVALID', `${file}: not valid YAML: ${msg}`, { cause: err })
  }
  return buildConfig(raw, baseDir, file)
}
