/**
 * The `narthex` command line (yargs). The only layer that reads argv and the
 * environment or decides exit codes: 0 success, 1 the work failed, 2 bad usage
 * or bad configuration. Commands return their exit code; a thrown error gets
 * one from {@link exitCodeOf}, and nothing else decides one.
 */
import { readFileSync } from 'node:fs'
import yargs, { type Argv } from 'yargs'
import { loadConfig, parseByteSize, type Config } from '../config/index.js'
import { isNarthexError, type ErrorCode } from '../errors.js'
import { formatPublicKey, formatSecretKey, generateSecretKey, parseSecretKey, toPublicKey } from '../protocol/index.js'
import { createLogger, splitListen, startNarthex } from './app.js'
import { runAudit } from './audit.js'
import { clientConfigText } from './client-config.js'
import { runExport, runImport, runMirror } from './closures.js'
import { startCluster } from './cluster.js'
import { runExplain } from './explain.js'
import { runExplainClosure } from './explain-closure.js'
import { runGc } from './gc.js'
import { runForget } from './forget.js'
import { parseServeArgs } from './serve-args.js'
import { runVerify } from './verify.js'
import { loadPool } from '../undici.js'

/**
 * Evaluates the modules narthex loads at their first use (undici, LevelDB), so that
 * the build's code cache holds their compiled code too (scripts/code-cache.mjs).
 */
export async function loadLazyModules(): Promise<void> {
  await Promise.all([loadPool(), import('level')])
}

/** The default configuration file, relative to the working directory. */
export const DEFAULT_CONFIG = 'config/narthex.yaml'

/** Exit codes of the command line. */
const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2

/** Thrown inside a command to end with a given exit code. */
class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`)
  }
}

/** Ends a command with `code` (a command's result: 0 returns normally). */
function exitWith(code: number): void {
  if (code !== EXIT_OK) throw new Exit(code)
}

/** Errors that mean the user's input (arguments, config, key files) is wrong, not that the work failed. */
const USAGE_ERRORS: ReadonlySet<ErrorCode> = new Set(['CONFIG_INVALID', 'KEY_INVALID', 'STORE_PATH_INVALID', 'BAD_REQUEST'])

/** The exit code for an error thrown out of a command. */
function exitCodeOf(err: unknown): number {
  if (err instanceof Exit) return err.code
  return isNarthexError(err) && USAGE_ERRORS.has(err.code) ? EXIT_USAGE : EXIT_FAILED
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
}

function fail(message: string): never {
  process.stderr.write(`narthex: ${message}\n`)
  throw new Exit(EXIT_USAGE)
}

function readConfig(argv: { config: string; data?: string | undefined; listen?: string | undefined }): Config {
  return loadConfig(argv.config, process.cwd(), { dataDir: argv.data, listen: argv.listen })
}

async function serve(argv: { config: string; data?: string | undefined; listen?: string | undefined }): Promise<void> {
  const config = readConfig(argv)
  if (argv.listen) splitListen(argv.listen)
  const log = createLogger(config.log.level, config.log.format)
  // Signals are caught from the start: one that arrives while narthex is still
  // starting stops it as soon as it is up, never kills it half-way.
  let signalled: ((signal: string) => void) | undefined
  let early: string | undefined
  const onSignal = (signal: string) => (signalled ? signalled(signal) : (early ??= signal))
  const onTerm = () => onSignal('SIGTERM')
  const onInt = () => onSignal('SIGINT')
  // SIGHUP re-reads the credential files (upstream netrc/bearer files, client tokens), nothing else.
  let onHup: () => void = () => log.warn('SIGHUP while starting: credentials are being read anyway')
  const hup = () => onHup()
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  process.on('SIGHUP', hup)
  try {
    const running = config.workers > 0 ? await startCluster(config, log) : await startNarthex(config, log)
    onHup = () => {
      log.info('SIGHUP: reloading credentials')
      running.reloadCredentials()
    }
    await new Promise<void>((resolve) => {
      signalled = (signal: string) => {
        // A second signal while shutting down does not wait any longer.
        signalled = (again) => {
          log.warn({ signal: again }, 'stopping at once')
          log.flush()
          process.exit(EXIT_FAILED)
        }
        log.info({ signal }, 'shutting down')
        running.close().then(resolve, (err: unknown) => {
          log.error({ err }, 'error while shutting down')
          resolve()
        })
      }
      if (early) signalled(early)
    })
  } finally {
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
    process.off('SIGHUP', hup)
  }
  log.flush()
}

function clientConfig(argv: { config: string; url?: string | undefined; nixos?: boolean | undefined }): void {
  out(clientConfigText(readConfig(argv), argv))
}

function keygen(argv: { name?: string | undefined; public?: boolean | undefined }): void {
  if (argv.public) {
    const secret = parseSecretKey(readFileSync(0, 'utf8'))
    out(formatPublicKey(toPublicKey(secret)))
    return
  }
  if (!argv.name) fail('keygen needs a key NAME, e.g. narthex keygen cache.example.org-1')
  const key = generateSecretKey(argv.name)
  out(formatSecretKey(key))
  process.stderr.write(`${formatPublicKey(toPublicKey(key))}\n`)
}

function withConfig<T>(y: Argv<T>) {
  return y.option('config', {
    alias: 'c',
    type: 'string',
    default: DEFAULT_CONFIG,
    describe: 'configuration file (YAML)',
  })
}

function withData<T>(y: Argv<T>) {
  return y.option('data', { type: 'string', describe: 'data directory (overrides the config; the default signing key moves with it)' })
}

/** The common options every command takes. */
export const withCommon = (y: Argv) => withData(withConfig(y))

/** The options of `serve` besides the common ones. */
export const serveOptions = <T>(y: Argv<T>) => y.option('listen', { type: 'string', describe: 'HOST:PORT to listen on (overrides the config)' })
type Cli = ReturnType<typeof withCommon>

/**
 * The commands, by name. A run registers only the one it names (its first
 * argument), so that yargs builds and renders no help for the others (yargs
 * renders the help of what is registered each time a command runs); anything
 * else registers them all, for the list, the suggestions and the errors.
 */
const COMMANDS: ReadonlyArray<readonly [name: string, register: (y: Cli) => Cli]> = [
  [
    'serve',
    (cli) =>
      cli.command(
        'serve',
        'run the proxy',
        (y) => serveOptions(y),
        serve,
      ),
  ],
  [
    'mirror',
    (cli) =>
      cli.command(
        'mirror [paths..]',
        'fetch whole closures through policy into the store and pin them (run it while narthex is stopped)',
        (y) =>
          y
            .positional('paths', { type: 'string', array: true, describe: 'store paths (their closures are mirrored)' })
            .option('from-file', { type: 'string', describe: 'store paths one per line, plain or .xz (a channel\'s store-paths.xz)' }),
        async (argv) => {
          exitWith(await runMirror(readConfig(argv), argv.paths ?? [], argv.fromFile, out))
        },
      ),
  ],
  [
    'export',
    (cli) =>
      cli.command(
        'export [paths..]',
        'write a file:// binary cache (narinfos signed by narthex, NARs, nix-cache-info) of closures, or of all pinned paths',
        (y) =>
          y
            .option('to', { type: 'string', demandOption: true, describe: 'directory to write the cache to' })
            .positional('paths', { type: 'string', array: true }),
        async (argv) => {
          exitWith(await runExport(readConfig(argv), argv.to, argv.paths ?? [], out))
        },
      ),
  ],
  [
    'import',
    (cli) =>
      cli.command(
        'import <dir>',
        'load a file:// binary cache directory, checking signatures (import.publicKeys) and hashes; imported paths are pinned',
        (y) =>
          y
            .positional('dir', { type: 'string', demandOption: true }),
        async (argv) => {
          exitWith(await runImport(readConfig(argv), argv.dir, out))
        },
      ),
  ],
  [
    'explain',
    (cli) =>
      cli.command(
        'explain <storePath>',
        'show which rule applies to a store path; with --fetch, what each upstream says and the decision; with --closure, the decision for every path of its closure (exit 1 if any would not be admitted)',
        (y) =>
          y
            .positional('storePath', { type: 'string', demandOption: true })
            .option('fetch', { type: 'boolean', default: false, describe: 'ask the upstreams (stores nothing)' })
            .option('closure', { type: 'boolean', default: false, describe: 'walk the references, asking the upstreams (stores nothing)' })
            .option('json', { type: 'boolean', default: false }),
        async (argv) => {
          const config = readConfig(argv)
          exitWith(
            argv.closure
              ? await runExplainClosure(config, argv.storePath, { json: argv.json }, out)
              : await runExplain(config, argv.storePath, { fetch: argv.fetch, json: argv.json }, out),
          )
        },
      ),
  ],
  [
    'verify',
    (cli) =>
      cli.command(
        'verify',
        're-hash every stored NAR against its index record; quarantine corrupt ones (exit 1 if any; exit 2 if none but some could not be decoded on this machine, which are kept). Run it while narthex is stopped',
        (y) =>
          y
            .option('quarantine', { type: 'boolean', default: true, describe: 'move corrupt files to <dataDir>/quarantine (--no-quarantine only reports)' })
            .option('json', { type: 'boolean', default: false }),
        async (argv) => {
          exitWith(await runVerify(readConfig(argv).dataDir, { quarantine: argv.quarantine, json: argv.json }, out))
        },
      ),
  ],
  [
    'forget',
    (cli) =>
      cli.command(
        'forget <storePath>',
        'release a path\'s first-seen NarHash and drop its narinfo, so the next request admits it afresh (e.g. after an upstream rebuilt it). Run it while narthex is stopped; exit 1 if narthex knows nothing of the path',
        (y) => y.positional('storePath', { type: 'string', demandOption: true, describe: 'store path or hash part' }),
        async (argv) => {
          exitWith(await runForget(readConfig(argv), argv.storePath, out))
        },
      ),
  ],
  [
    'gc',
    (cli) =>
      cli.command(
        'gc',
        'evict least-recently-used NARs (not pinned, pushed or imported) down to a size. Run it while narthex is stopped; a running narthex does it by itself when storage.maxSize is set',
        (y) =>
          y
            .option('max-size', { type: 'string', describe: 'e.g. 50GiB (default: storage.maxSize of the config)' }),
        async (argv) => {
          const config = readConfig(argv)
          const max = argv.maxSize !== undefined ? parseByteSize(argv.maxSize) : config.storage.maxSize
          if (max === undefined) fail(argv.maxSize !== undefined ? `--max-size: not a size: ${argv.maxSize}` : 'give --max-size or set storage.maxSize in the config')
          exitWith(await runGc(config.dataDir, max, out))
        },
      ),
  ],
  [
    'keygen',
    (cli) =>
      cli.command(
        'keygen [name]',
        'print a new secret key in Nix\'s format on stdout, its public key on stderr',
        (y) =>
          y
            .positional('name', { type: 'string', describe: 'key name, e.g. cache.example.org-1' })
            .option('public', { type: 'boolean', describe: 'instead, read a secret key on stdin and print its public key' }),
        (argv) => keygen(argv),
      ),
  ],
  [
    'audit',
    (cli) =>
      cli.command(
        'audit',
        'print the audit log of admissions and refusals',
        (y) =>
          y
            .option('verify', { type: 'boolean', default: false, describe: 'check the hash chain; exit 1 naming the first broken entry' })
            .option('path', { type: 'string', describe: 'only entries whose store path contains this' })
            .option('since', { type: 'string', describe: 'only entries at or after this time (ISO 8601)' })
            .option('until', { type: 'string', describe: 'only entries before this time (ISO 8601)' })
            .option('json', { type: 'boolean', default: false, describe: 'JSON lines' })
            .option('checkpoint', { type: 'string', array: true, describe: 'with --verify: a signed checkpoint (file, directory of them, or URL such as http://narthex:5557/audit/checkpoint) the log must still hold exactly; repeatable' })
            .option('public-key', { type: 'string', describe: 'the public key (name:base64, or a file) checkpoints are signed with (default: the public half of signingKeyFile)' }),
        async (argv) => {
          const config = readConfig(argv)
          exitWith(await runAudit(config.dataDir, { ...argv, signingKeyFile: config.signingKeyFile }, out))
        },
      ),
  ],
  [
    'client-config',
    (cli) =>
      cli.command(
        'client-config',
        'print the system-wide nix.conf lines a client needs (--nixos: the NixOS nix.settings block), and how to check them',
        (y) =>
          y
            .option('url', { type: 'string', describe: 'the URL clients reach narthex at (default: publicUrl of the config, else its listen address)' })
            .option('nixos', { type: 'boolean', default: false, describe: 'print the NixOS configuration.nix block instead' }),
        (argv) => clientConfig(argv),
      ),
  ],
]

/**
 * Runs the CLI with `args` (argv without node and script) and returns the exit code.
 */
export async function main(args: string[]): Promise<number> {
  const plainServe = parseServeArgs(args, DEFAULT_CONFIG)
  if (plainServe) return run(() => serve(plainServe))
  const named = COMMANDS.filter(([name]) => name === args[0])
  const parser = (named.length > 0 ? named : COMMANDS)
    .reduce((y, [, register]) => register(y), withCommon(yargs(args)))
    .scriptName('narthex')
    .usage('$0 <command> [options]\n\nAn on-premises caching proxy for Nix binary caches.')
    .demandCommand(1, 'name a command (narthex --help lists them)')
    .strict()
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version()
    .exitProcess(false)
    .fail((msg, err) => {
      if (err) throw err
      fail(`${msg}\nrun 'narthex --help' for usage`)
    })
    .wrap(Math.min(100, process.stdout.columns || 100))

  return run(() => parser.parseAsync())
}

/** Runs a command, and returns its exit code. */
async function run(command: () => Promise<unknown>): Promise<number> {
  try {
    await command()
    return EXIT_OK
  } catch (err) {
    // A NarthexError's message is meant for users; anything else is a bug, shown with its stack.
    if (isNarthexError(err)) process.stderr.write(`narthex: ${err.message}\n`)
    else if (!(err instanceof Exit)) process.stderr.write(`narthex: ${(err as Error)?.stack ?? String(err)}\n`)
    return exitCodeOf(err)
  }
}
