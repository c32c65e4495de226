/**
 * Drives the real Nix (Debian `nix-bin`, root, single-user, no daemon) for end-to-end tests.
 * The machine's `nix` (bookworm's 2.8) builds paths and makes the upstream caches; the client
 * that substitutes and pushes is the one {@link clientCommand} names (the machine's own, or
 * Nix 2.26 with `NARTHEX_TEST_NIX`). The client commands here were tried with Nix 2.8 and 2.26;
 * docs/TESTING.md explains the recipes.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, constants } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join, resolve } from 'node:path'
import { checkClientNix, clientCommand, clientNixDir, parsePathInfoJson, type PathInfo } from './nix-client.js'

export { CLIENT_REFUSALS, clientCommand, clientNixDir, type PathInfo } from './nix-client.js'

/** True when an executable `nix` is on PATH. */
export const nixAvailable: boolean = (process.env.PATH ?? '').split(delimiter).some((dir) => {
  if (dir === '') return false
  try {
    accessSync(join(dir, 'nix'), constants.X_OK)
    return true
  } catch {
    return false
  }
})

const INSTALL_HINT = 'apt-get install -y nix-bin'

/**
 * Skip reason for tests that need the real `nix`: `test('…', { skip: nixSkipReason() }, …)`.
 *
 * @returns `undefined` when `nix` is on PATH; otherwise a loud reason, also printed to stderr.
 * @throws Error when `nix` is missing and `CI=true`, so CI never silently skips these tests;
 *   and whenever `NARTHEX_TEST_NIX` names a client that is not there.
 */
export function nixSkipReason(): string | undefined {
  checkClientNix()
  if (nixAvailable) return undefined
  if (process.env.CI === 'true') throw new Error(`nix is required in CI: ${INSTALL_HINT}`)
  const reason = `SKIPPED: real nix client not found; install with ${INSTALL_HINT}`
  process.stderr.write(`${reason}\n`)
  return reason
}

/** A child process exited nonzero (or was killed). The message includes its stderr. */
export class NixCommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`${command} exited with ${exitCode ?? 'a signal'}:\n${stderr}`)
    this.name = 'NixCommandError'
  }
}

/** Options of {@link NixEnv.run}. */
export interface RunOptions {
  /** Written to the child's stdin (stdin is closed either way). */
  input?: string | Buffer
  /** Kill the child (SIGKILL) after this long; a guard so a hung client never hangs a test. */
  timeoutMs?: number
}

/** One derivation of {@link NixEnv.buildClosure}: other spec names it references, an optional blob. */
export interface DrvSpec {
  /** Names of other entries of the same spec; each becomes a runtime reference. */
  deps?: string[]
  /** Size of `$out/blob`, random bytes from /dev/urandom. */
  bigBytes?: number
}

/** Options of {@link NixEnv.push}: `--option NAME VALUE` pairs, e.g. `{ 'netrc-file': FILE }`. */
export type PushOptions = Record<string, string>

/** Options of {@link NixEnv.substitute}. */
export interface SubstituteOptions {
  /**
   * `copy` (default): `nix copy --from URL --to STORE PATHS`.
   * `realise`: `nix-store --store STORE -r PATHS --option substituters URL`, the path a build takes.
   */
  method?: 'copy' | 'realise'
  /** Extra `--option NAME VALUE` pairs, e.g. `{ 'download-attempts': '1' }`. */
  options?: Record<string, string>
  /** See {@link RunOptions.timeoutMs}. */
  timeoutMs?: number
}

/** A key pair made by `nix key generate-secret`. */
export interface NixKey {
  secretFile: string
  publicFile: string
  /** `name:base64(seed32‖pub32)` */
  secretKey: string
  /** `name:base64(pub32)` */
  publicKey: string
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/
const SALT_RE = /^[A-Za-z0-9._-]*$/
const DEFAULT_TIMEOUT_MS = 120_000

/**
 * The settings for driving nix as root without a daemon or remembered answers: no sandbox, no
 * build users, no substituters, narinfo TTLs 0.
 */
export const NIX_TEST_CONFIG = [
  'experimental-features = nix-command',
  'sandbox = false',
  'build-users-group =',
  'substituters =',
  'narinfo-cache-negative-ttl = 0',
  'narinfo-cache-positive-ttl = 0',
].join('\n')

/**
 * A scratch directory plus the environment the Nix tools run with: {@link NIX_TEST_CONFIG} and a
 * private XDG_CACHE_HOME so no client-side narinfo cache leaks between environments.
 *
 * Store paths built here land in the machine's real /nix/store; chroot stores (`substitute`,
 * `copyToStore`) live under {@link NixEnv.dir}. Commands on a store {@link substitute} made run
 * the client; the others run the machine's nix. Call {@link NixEnv.cleanup} when done.
 */
export class NixEnv {
  /** Environment for child processes. */
  readonly env: NodeJS.ProcessEnv
  #counter = 0
  /** Chroot stores the client made (resolved paths): commands on them run the client too. */
  readonly #clientStores = new Set<string>()

  private constructor(readonly dir: string) {
    this.env = {
      ...process.env,
      NIX_CONFIG: NIX_TEST_CONFIG,
      XDG_CACHE_HOME: join(dir, 'xdg-cache'),
    }
  }

  /** Makes the temp dir (`narthex-nix-*` under os.tmpdir()) and its XDG cache dir. */
  static async create(): Promise<NixEnv> {
    const env = new NixEnv(await mkdtemp(join(tmpdir(), 'narthex-nix-')))
    await mkdir(env.env.XDG_CACHE_HOME as string)
    return env
  }

  /** A fresh, not yet existing path under {@link dir}, e.g. for a chroot store or a cache. */
  freshDir(prefix: string): string {
    return join(this.dir, `${prefix}-${++this.#counter}`)
  }

  /**
   * Runs `cmd args` with {@link env}.
   * @throws NixCommandError on a nonzero exit, a signal, or the timeout.
   */
  async run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
    const { stdout, stderr } = await this.#exec(cmd, args, opts)
    return { stdout: stdout.toString('utf8'), stderr }
  }

  /**
   * Builds a closure of tiny real store paths, one per spec entry. Each `$out` holds `name`,
   * `readme.txt`, a symlink `link -> name`, an executable `bin/NAME`, `deps` (the dependency
   * paths, making references; absent without deps) and, with `bigBytes`, a random `blob`.
   *
   * @param salt mixed into every derivation; default random, so each call yields fresh paths.
   * @returns spec name → output store path.
   */
  async buildClosure(spec: Record<string, DrvSpec>, salt: string = randomBytes(8).toString('hex')): Promise<Record<string, string>> {
    const dir = this.freshDir('closure')
    const file = join(dir, 'default.nix')
    await mkdir(dir)
    await writeFile(file, closureExpression(spec, salt))
    const names = Object.keys(spec)
    const { stdout } = await this.run('nix-build', [file, ...names.flatMap((n) => ['-A', n]), '--no-out-link'])
    // nix-build prints one output path per -A, in argument order.
    const paths = stdout.trim().split('\n')
    if (paths.length !== names.length) throw new Error(`nix-build printed ${paths.length} paths for ${names.length} attributes`)
    return Object.fromEntries(names.map((n, i) => [n, paths[i]]))
  }

  /** `nix-store -qR`: the closure of `path` (in `store`, a chroot store dir, when given). */
  async closure(path: string, store?: string): Promise<string[]> {
    const { stdout } = await this.run(this.#tool('nix-store', store), [...storeArgs(store), '-qR', path])
    return stdout.trim().split('\n')
  }

  /** `nix path-info --json` of `paths` (no closure), in the local or a chroot store. */
  async pathInfo(paths: string[], store?: string): Promise<PathInfo[]> {
    const { stdout } = await this.run(this.#tool('nix', store), ['path-info', ...storeArgs(store), '--json', ...paths])
    return parsePathInfoJson(stdout)
  }

  /** Makes a key pair named `name`, stored as `keys/NAME.sec` and `keys/NAME.pub` under {@link dir}. */
  async genKey(name: string): Promise<NixKey> {
    const keys = join(this.dir, 'keys')
    await mkdir(keys, { recursive: true })
    const secretKey = (await this.run('nix', ['key', 'generate-secret', '--key-name', name])).stdout.trim()
    const publicKey = (await this.run('nix', ['key', 'convert-secret-to-public'], { input: secretKey })).stdout.trim()
    const secretFile = join(keys, `${name}.sec`)
    const publicFile = join(keys, `${name}.pub`)
    await writeFile(secretFile, secretKey, { mode: 0o600 })
    await writeFile(publicFile, publicKey)
    return { secretFile, publicFile, secretKey, publicKey }
  }

  /**
   * `nix store sign -r`: adds a signature by `keyFile` to `paths` and their closures, in the local
   * store or the chroot store `store`. Signatures accumulate; existing ones are kept.
   */
  async sign(keyFile: string, paths: string[], store?: string): Promise<void> {
    await this.run(this.#tool('nix', store), ['store', 'sign', ...storeArgs(store), '--key-file', keyFile, '-r', ...paths])
  }

  /**
   * `nix copy --to file://DIR?compression=…`: writes `paths` and their closures as a binary cache
   * directory (with nix-cache-info). No signatures are needed for a file:// target; the narinfos
   * carry whatever signatures the source store has.
   *
   * @param opts.compression default: Nix's default, xz.
   * @param opts.store the source, a chroot store dir (default: the local store).
   * @returns the cache URL `file://DIR`.
   */
  async copyToCache(dir: string, paths: string[], opts: { compression?: 'xz' | 'zstd' | 'bzip2' | 'none'; store?: string } = {}): Promise<string> {
    const url = `file://${resolve(dir)}`
    const to = opts.compression === undefined ? url : `${url}?compression=${opts.compression}`
    await this.run('nix', ['copy', ...storeArgs(opts.store), '--to', to, ...paths])
    return url
  }

  /**
   * `nix copy --no-check-sigs --to DIR`: copies `paths` and their closures (with their existing
   * signatures) into the chroot store DIR, e.g. to re-sign them there with another key. Nix
   * refuses even locally built paths without `--no-check-sigs` ("lacks a valid signature").
   */
  async copyToStore(dir: string, paths: string[]): Promise<void> {
    await this.run('nix', ['copy', '--no-check-sigs', '--to', resolve(dir), ...paths])
  }

  /**
   * The client pushes `paths` and their closures from its store to the binary cache `toUrl`
   * (e.g. `http://…?secret-key=FILE`): `nix copy --to URL PATHS --option NAME VALUE…`. A client
   * other than the machine's nix has a store of its own, so the paths are first copied into a
   * chroot store under {@link dir} and pushed from there (`nix copy --from STORE`).
   *
   * @throws NixCommandError when Nix fails or the cache refuses the push.
   */
  async push(toUrl: string, paths: string[], options: PushOptions = {}): Promise<void> {
    const optionArgs = Object.entries(options).flatMap(([k, v]) => ['--option', k, v])
    const from: string[] = []
    if (clientNixDir !== undefined) {
      const store = resolve(this.freshDir('push-from'))
      await this.copyToStore(store, paths)
      this.#clientStores.add(store)
      from.push('--from', store)
    }
    await this.run(clientCommand('nix'), ['copy', ...from, '--to', toUrl, ...paths, ...optionArgs])
  }

  /**
   * Substitutes `paths` (and their closures) from the binary cache `fromUrl` (http:// or file://)
   * into a FRESH chroot store, trusting only `publicKeys`, the way a client does:
   *
   * - `copy`: `nix copy --from URL --to STORE PATHS --option trusted-public-keys "K1 K2"`.
   *   Fails with "cannot add path '…' because it lacks a valid signature" (see
   *   {@link CLIENT_REFUSALS} for every version's wording).
   * - `realise`: `nix-store --store STORE -r PATHS --option substituters URL
   *   --option trusted-public-keys "K1 K2"`. An untrusted substitute is only a warning ("is not
   *   signed by any of the keys in 'trusted-public-keys'"); the error is then "build of '…' failed".
   *
   * Both run the client ({@link clientCommand}), and so do later commands on the store made here.
   *
   * `trusted-public-keys` must be passed with `--option` (space-separated in one argument); it
   * replaces the default cache.nixos.org key. Altered file contents fail with "hash mismatch
   * importing path"; altered NAR framing fails earlier ("bad archive: …", even "out of memory" for
   * a length field); a short body with "Transferred a partial file"; a hang only after
   * `stalled-download-timeout` (default 300 s: pass e.g. `{ 'stalled-download-timeout': '1' }`);
   * 5xx after `download-attempts` (default 5) retries with backoff.
   *
   * @returns the chroot store directory.
   * @throws NixCommandError when Nix refuses or cannot fetch a path.
   */
  async substitute(fromUrl: string, paths: string[], publicKeys: string[], opts: SubstituteOptions = {}): Promise<{ store: string }> {
    const store = this.freshDir('store')
    this.#clientStores.add(resolve(store))
    const options = { 'trusted-public-keys': publicKeys.join(' '), ...opts.options }
    const optionArgs = Object.entries(options).flatMap(([k, v]) => ['--option', k, v])
    const runOpts = { timeoutMs: opts.timeoutMs }
    if (opts.method === 'realise') {
      await this.run(clientCommand('nix-store'), ['--store', store, '-r', ...paths, '--option', 'substituters', fromUrl, ...optionArgs], runOpts)
    } else {
      await this.run(clientCommand('nix'), ['copy', '--from', fromUrl, '--to', store, ...paths, ...optionArgs], runOpts)
    }
    return { store }
  }

  /** `nix-store --store STORE --verify-path PATH`: rehashes `path` in a chroot store. @throws on mismatch. */
  async verifyPath(store: string, path: string): Promise<void> {
    await this.run(this.#tool('nix-store', store), ['--store', store, '--verify-path', path])
  }

  /**
   * `nix store dump-path`: the NAR serialisation of `path` (in the chroot store `store` when
   * given). Not `nix-store --store S --dump`: Nix 2.26 dumps the path outside the chroot store.
   */
  async dump(path: string, store?: string): Promise<Buffer> {
    return (await this.#exec(this.#tool('nix', store), ['store', 'dump-path', ...storeArgs(store), path])).stdout
  }

  /**
   * `nix-hash --type sha256 --base32`: the NarHash of `path` as narinfo files write it,
   * `sha256:<nix32>`. With `store`, hashes the copy inside that chroot store.
   */
  async hashPath(path: string, store?: string): Promise<string> {
    const fsPath = store === undefined ? path : join(store, path)
    return `sha256:${(await this.run(this.#tool('nix-hash', store), ['--type', 'sha256', '--base32', fsPath])).stdout.trim()}`
  }

  /** Removes {@link dir}; chroot stores hold read-only dirs, so it makes everything writable first. */
  async cleanup(): Promise<void> {
    await this.run('chmod', ['-R', 'u+w', this.dir])
    await rm(this.dir, { recursive: true, force: true })
  }

  /** The client's `tool` for a store the client made, else the machine's. */
  #tool(tool: string, store: string | undefined): string {
    return store !== undefined && this.#clientStores.has(resolve(store)) ? clientCommand(tool) : tool
  }

  #exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: Buffer; stderr: string }> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(cmd, args, { env: this.env, timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, killSignal: 'SIGKILL' })
      const out: Buffer[] = []
      const err: Buffer[] = []
      child.stdout.on('data', (c: Buffer) => out.push(c))
      child.stderr.on('data', (c: Buffer) => err.push(c))
      child.on('error', reject)
      child.on('close', (code) => {
        const stdout = Buffer.concat(out)
        const stderr = Buffer.concat(err).toString('utf8')
        if (code === 0) resolvePromise({ stdout, stderr })
        else reject(new NixCommandError([cmd, ...args].join(' '), code, stdout.toString('utf8'), stderr))
      })
      // The child may exit without reading stdin; ignore the resulting EPIPE.
      child.stdin.on('error', () => {})
      child.stdin.end(opts.input)
    })
  }
}

function storeArgs(store: string | undefined): string[] {
  return store === undefined ? [] : ['--store', resolve(store)]
}

/** The Nix expression of the `mk` pattern for `spec`, one attribute per entry. */
function closureExpression(spec: Record<string, DrvSpec>, salt: string): string {
  if (!SALT_RE.test(salt)) throw new Error(`bad salt ${JSON.stringify(salt)}`)
  const attrs = Object.entries(spec).map(([name, { deps = [], bigBytes = 0 }]) => {
    if (!NAME_RE.test(name)) throw new Error(`bad derivation name ${JSON.stringify(name)}`)
    for (const d of deps) if (!(d in spec)) throw new Error(`${name}: unknown dependency ${JSON.stringify(d)}`)
    if (!Number.isSafeInteger(bigBytes) || bigBytes < 0) throw new Error(`${name}: bad bigBytes ${bigBytes}`)
    // Quoted attribute names and `self."x"` keep names like `let` or `in` legal.
    return `    "${name}" = mk "${name}" [${deps.map((d) => ` self."${d}"`).join('')} ] ${bigBytes};`
  })
  return `let
  salt = "${salt}";
  mk = name: deps: bigBytes: derivation {
    inherit name deps salt;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      export PATH=/usr/bin:/bin
      mkdir -p $out
      echo \${name} > $out/name
      echo "hello from \${name}" > $out/readme.txt
      ln -s name $out/link
      mkdir $out/bin
      printf '#!/bin/sh\\necho %s\\n' \${name} > $out/bin/\${name}
      chmod +x $out/bin/\${name}
      for d in $deps; do echo $d >> $out/deps; done
      \${if bigBytes > 0 then "head -c \${toString bigBytes} /dev/urandom > $out/blob" else ""}
    '' ];
  };
  self = {
${attrs.join('\n')}
  };
in self
`
}

