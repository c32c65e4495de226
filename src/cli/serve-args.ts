/**
 * The arguments of `narthex serve` in their plain forms, read without yargs: a
 * start spends 20-30 ms in yargs (building the parser, finding package.json,
 * rendering the help of the command it runs, which yargs does each time), and
 * `serve` is what a service manager starts and restarts. Anything else (another
 * command, help, an unknown or repeated option, a value that looks like an option)
 * gives undefined, and yargs parses it with its usual messages.
 * test/cli/serve-args.test.ts checks that yargs reads every accepted form the same.
 */

/** What `serve` takes. */
export interface ServeArgs {
  config: string
  data?: string | undefined
  listen?: string | undefined
}

const OPTIONS: Readonly<Record<string, keyof ServeArgs>> = { '--config': 'config', '-c': 'config', '--data': 'data', '--listen': 'listen' }

/** `args` (without node and script) as `serve`'s options, or undefined when yargs is to read them. */
export function parseServeArgs(args: readonly string[], defaultConfig: string): ServeArgs | undefined {
  if (args[0] !== 'serve') return undefined
  const seen: Partial<ServeArgs> = {}
  for (let i = 1; i < args.length; i++) {
    const arg = args[i]
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1
    const key = OPTIONS[eq > 0 ? arg.slice(0, eq) : arg]
    if (key === undefined || seen[key] !== undefined) return undefined
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i]
    // A missing value, or one yargs could take for an option or read as something else.
    if (value === undefined || value === '' || value.startsWith('-')) return undefined
    seen[key] = value
  }
  return { config: seen.config ?? defaultConfig, data: seen.data, listen: seen.listen }
}
