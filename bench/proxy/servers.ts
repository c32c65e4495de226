/**
 * The processes under test, all on 127.0.0.1: the upstream (nginx serving the
 * cache directory), nginx with proxy_cache, and narthex (`node bin/narthex.js
 * serve`). Each is a child process of the benchmark, stopped by its own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

/** A free TCP port on 127.0.0.1 (bound and released; good enough on a quiet machine). */
export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (srv.address() as AddressInfo).port
  await new Promise((r) => srv.close(r))
  return port
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true
  return Promise.race([new Promise<boolean>((r) => child.once('exit', () => r(true))), sleep(ms).then(() => false)])
}

/** Sends SIGTERM (SIGQUIT for nginx's graceful stop), then SIGKILL after `graceMs`. */
async function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  if (!(await waitExit(child, graceMs))) {
    child.kill('SIGKILL')
    await waitExit(child, 5000)
  }
}

/** Waits (bounded) until a TCP connect to `port` succeeds. */
export async function waitListening(port: number, child: ChildProcess, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  const { connect } = await import('node:net')
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} is not listening on ${port} after ${ms} ms`)
    await sleep(50)
  }
}

export interface NginxOptions {
  /** Template file (bench/proxy/nginx/*.conf). */
  template: string
  /** Working directory of this instance (pid, logs, temp dirs, config). */
  prefix: string
  vars: Record<string, string | number>
  /** Listen on this port (default: a free one). */
  port?: number
}

/** One nginx instance (master + workers) in the foreground. */
export class Nginx {
  child!: ChildProcess
  url = ''

  private constructor(readonly opts: NginxOptions) {}

  static async start(opts: NginxOptions): Promise<Nginx> {
    const n = new Nginx(opts)
    await n.#start()
    return n
  }

  /** Starts nginx without waiting for it to listen; `spawnedAt` is `performance.now()` right before the spawn. */
  static async spawn(opts: NginxOptions & { port: number }): Promise<{ nginx: Nginx; spawnedAt: number }> {
    const n = new Nginx(opts)
    const spawnedAt = await n.#spawn()
    return { nginx: n, spawnedAt }
  }

  async #start(): Promise<void> {
    await this.#spawn()
    await waitListening(Number(new URL(this.url).port), this.child, `nginx (${join(this.opts.prefix, 'nginx.conf')})`)
  }

  async #spawn(): Promise<number> {
    const { prefix, template } = this.opts
    await mkdir(prefix, { recursive: true })
    const port = this.opts.port ?? (await freePort())
    const isRoot = process.getuid?.() === 0
    const vars: Record<string, string | number> = { ...this.opts.vars, PREFIX: prefix, PORT: port, USER: isRoot ? 'user root;' : '' }
    let conf = await readFile(template, 'utf8')
    conf = conf.replace(/@([A-Z_]+)@/g, (m, name: string) => (name in vars ? String(vars[name]) : m))
    if (/@[A-Z_]+@/.test(conf)) throw new Error(`unfilled variable in ${template}: ${/@[A-Z_]+@/.exec(conf)![0]}`)
    const confFile = join(prefix, 'nginx.conf')
    await writeFile(confFile, conf)
    const err = openSync(join(prefix, 'stderr.log'), 'a')
    const spawnedAt = performance.now()
    this.child = spawn('nginx', ['-p', prefix, '-c', confFile, '-e', join(prefix, 'error.log')], { stdio: ['ignore', 'ignore', err] })
    closeSync(err)
    this.url = `http://127.0.0.1:${port}`
    return spawnedAt
  }

  /** The pids of the worker processes. */
  async workerPids(): Promise<number[]> {
    const { readdir } = await import('node:fs/promises')
    const out: number[] = []
    for (const d of await readdir('/proc')) {
      if (!/^\d+$/.test(d)) continue
      try {
        const stat = await readFile(`/proc/${d}/stat`, 'utf8')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        if (ppid === this.child.pid) out.push(Number(d))
      } catch {
        // gone
      }
    }
    return out
  }

  async stop(): Promise<void> {
    await stopChild(this.child, 'SIGQUIT', 10_000)
  }
}

/**
 * The environment narthex runs in: the suite's own, without NODE_EXTRA_CA_CERTS. A shell
 * or CI machine may set it for its own tools; node then parses that CA bundle at every
 * start (50-90 ms of each start measured on the bench machine, in the core and in each
 * cluster worker) while narthex's service units set nothing of the kind and the suite's
 * upstreams are plain HTTP. RESULTS.md says which runs had it.
 */
export function serviceEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_EXTRA_CA_CERTS
  return env
}

export interface NarthexOptions {
  /** The narthex entry point (bin/narthex.js of a build). */
  bin: string
  /** Working directory of this instance: config, data dir, log. Removed first. */
  dir: string
  signingKeyFile: string
  upstreamUrl: string
  upstreamPublicKey: string
  /** Extra node flags, e.g. `--cpu-prof`. */
  nodeArgs?: string[]
  /** The config's `workers` (0: one process; `auto`: one per core). */
  workers?: number | 'auto'
  /** Use this data directory (kept as it is) instead of `<dir>/data`. */
  dataDir?: string
  /** Listen on this port (default: any free one, read back from the log). */
  port?: number
  /** Keep the directory (and so the data dir) of an earlier start instead of starting fresh. */
  keepData?: boolean
  /**
   * The config's `prefetch.nars` (unset: narthex's default, on): a client served the narinfo of a
   * path narthex just admitted has its NAR downloaded at once, ahead of its NAR request.
   */
  prefetchNars?: boolean
}

/** The static upstream every scenario and tool reads: nginx serving the prepared binary cache `cacheDir`, under `runDir/upstream`. */
export function startUpstream(runDir: string, cacheDir: string): Promise<Nginx> {
  return Nginx.start({ template: join(dirname(fileURLToPath(import.meta.url)), 'nginx', 'upstream.conf'), prefix: join(runDir, 'upstream'), vars: { ROOT: cacheDir } })
}

/** A narthex process with a fresh data directory. */
export class Narthex {
  child!: ChildProcess
  url = ''
  publicKey = ''
  readonly logFile: string

  private constructor(readonly opts: NarthexOptions) {
    this.logFile = join(opts.dir, 'narthex.log')
  }

  static async start(opts: NarthexOptions): Promise<Narthex> {
    const n = new Narthex(opts)
    await n.#spawn()
    await n.waitServing()
    return n
  }

  /**
   * Starts narthex without waiting for it to serve (for start-up timings: give a `port`).
   * `spawnedAt` is `performance.now()` right before the spawn.
   */
  static async spawn(opts: NarthexOptions): Promise<{ narthex: Narthex; spawnedAt: number }> {
    const n = new Narthex(opts)
    const spawnedAt = await n.#spawn()
    if (opts.port) n.url = `http://127.0.0.1:${opts.port}`
    return { narthex: n, spawnedAt }
  }

  get pid(): number {
    return this.child.pid!
  }

  async #spawn(): Promise<number> {
    const { dir, bin } = this.opts
    if (!this.opts.keepData) await rm(dir, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    await rm(this.logFile, { force: true })
    const config = {
      listen: `127.0.0.1:${this.opts.port ?? 0}`,
      dataDir: this.opts.dataDir ?? join(dir, 'data'),
      signingKeyFile: this.opts.signingKeyFile,
      upstreams: [{ name: 'up', url: this.opts.upstreamUrl, publicKeys: [this.opts.upstreamPublicKey] }],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
      ...(this.opts.workers ? { workers: this.opts.workers } : {}),
      ...(this.opts.prefetchNars !== undefined ? { prefetch: { nars: this.opts.prefetchNars } } : {}),
    }
    // YAML is a superset of JSON.
    const configFile = join(dir, 'narthex.yaml')
    await writeFile(configFile, JSON.stringify(config, null, 2))
    const err = openSync(this.logFile, 'a')
    // narthex writes nothing on stdout; node's diagnostics (--trace-gc) do.
    const out = openSync(join(dir, 'stdout.log'), 'a')
    // Started as `npm start`, the Dockerfile and bin/narthex.js's shebang start it.
    const shipped = ['--max-semi-space-size=2']
    const spawnedAt = performance.now()
    this.child = spawn(process.execPath, [...shipped, ...(this.opts.nodeArgs ?? []), bin, 'serve', '--config', configFile], {
      cwd: dir,
      env: serviceEnv(),
      stdio: ['ignore', out, err],
    })
    closeSync(err)
    closeSync(out)
    return spawnedAt
  }

  /** Waits (at most `ms`) for the log line `narthex is serving`, and takes the URL and key from it. */
  async waitServing(ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms
    for (;;) {
      const text = await readFile(this.logFile, 'utf8').catch(() => '')
      for (const line of text.split('\n')) {
        if (!line.includes('narthex is serving')) continue
        const entry = JSON.parse(line) as { url: string; publicKey: string }
        this.url = entry.url
        this.publicKey = entry.publicKey
        return
      }
      if (this.child.exitCode !== null) throw new Error(`narthex exited with ${this.child.exitCode}: ${text.slice(-2000)}`)
      if (Date.now() > deadline) throw new Error(`narthex did not start within ${ms / 1000} s: ${text.slice(-2000)}`)
      await sleep(25)
    }
  }

  /** The main process and its node children (cluster workers; not xz and the like). */
  async pids(): Promise<number[]> {
    const { readdir } = await import('node:fs/promises')
    const out = [this.pid]
    for (const d of await readdir('/proc')) {
      if (!/^\d+$/.test(d)) continue
      try {
        const stat = await readFile(`/proc/${d}/stat`, 'utf8')
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        if (ppid === this.pid && comm.startsWith('node')) out.push(Number(d))
      } catch {
        // gone
      }
    }
    return out
  }

  /** Log lines (parsed) whose msg contains `text`. */
  async logged(text: string): Promise<Array<Record<string, unknown>>> {
    const out: Array<Record<string, unknown>> = []
    for (const line of (await readFile(this.logFile, 'utf8')).split('\n')) {
      if (!line.includes(text)) continue
      try {
        out.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // not JSON
      }
    }
    return out
  }

  /** SIGKILL (a crash, or the OOM killer): nothing is flushed or closed. */
  async kill(): Promise<void> {
    const exited = waitExit(this.child, 10_000)
    this.child.kill('SIGKILL')
    await exited
  }

  /** SIGTERM (graceful: a --cpu-prof profile is written), SIGKILL after 20 s. */
  async stop(): Promise<void> {
    await stopChild(this.child, 'SIGTERM', 20_000)
  }
}

/** bench/proxy/wan-proxy.mjs in front of an upstream: first byte delayed, each connection paced. */
export class WanProxy {
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(opts: { script: string; upstreamUrl: string; delayMs: number; mbit: number; logFile: string }): Promise<WanProxy> {
    const port = await freePort()
    const err = openSync(opts.logFile, 'a')
    const args = [opts.script, '--upstream', opts.upstreamUrl, '--port', String(port), '--delay-ms', String(opts.delayMs), '--mbit', String(opts.mbit)]
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', err] })
    closeSync(err)
    await waitListening(port, child, 'wan-proxy')
    return new WanProxy(child, `http://127.0.0.1:${port}`)
  }

  async stop(): Promise<void> {
    await stopChild(this.child, 'SIGTERM', 5000)
  }
}
