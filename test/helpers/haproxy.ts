/**
 * Runs the real HAProxy with the repository's config/haproxy.cfg in front of
 * narthex nodes on 127.0.0.1: only the `bind` line and each backend's `server`
 * lines are replaced, so tests exercise the shipped hashing, health checks and retries.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { ROOT } from './narthex.js'

/** Where Debian installs HAProxy. */
export const HAPROXY = '/usr/sbin/haproxy'

/**
 * Why tests needing HAProxy cannot run here, printed loudly; undefined when they can.
 * @throws with CI=true, where a missing HAProxy is a failure.
 */
export function haproxySkipReason(): string | undefined {
  if (existsSync(HAPROXY)) return undefined
  const hint = 'apt-get install haproxy (2.6 or later)'
  if (process.env.CI === 'true') throw new Error(`haproxy is required in CI: ${hint}`)
  const reason = `SKIPPED: ${HAPROXY} not found; install with ${hint}`
  process.stderr.write(`${reason}\n`)
  return reason
}

/** A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds it first). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A running HAProxy. */
export interface Balancer {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string
  /** The config it runs with. */
  readonly configFile: string
  /** Its log lines (config/haproxy.cfg logs every request to stdout). */
  readonly logs: string[]
  stop(): Promise<void>
}

/**
 * Starts HAProxy with config/haproxy.cfg, balancing over `nodes` (`name` → `http://127.0.0.1:PORT`),
 * and waits until it answers `/nix-cache-info` through a node.
 * @param dir where its config is written.
 */
export async function startHaproxy(dir: string, nodes: ReadonlyArray<{ name: string; url: string }>): Promise<Balancer> {
  const port = await freePort()
  const shipped = await readFile(join(ROOT, 'config', 'haproxy.cfg'), 'utf8')
  const servers = nodes.map((n) => `    server ${n.name} ${new URL(n.url).host}`)
  // Each backend's block of `server` lines becomes the nodes under test.
  const lines = shipped.split('\n').flatMap((l, i, all) => (!/^\s+server\s/.test(l) ? [l] : /^\s+server\s/.test(all[i - 1] ?? '') ? [] : servers))
  const config = lines.join('\n').replace(/^(\s+)bind :8080$/m, `$1bind 127.0.0.1:${port}`)
  if (!config.includes(`bind 127.0.0.1:${port}`)) throw new Error('config/haproxy.cfg has no `bind :8080` line to replace')
  const configFile = join(dir, 'haproxy.cfg')
  await writeFile(configFile, config)
  const child: ChildProcess = spawn(HAPROXY, ['-db', '-f', configFile], { stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: string[] = []
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (l) => logs.push(l))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}: ${logs.slice(-10).join('\n')}`)
    const ok = await fetch(`${url}/nix-cache-info`).then((r) => r.ok, () => false)
    if (ok) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`haproxy did not answer: ${logs.slice(-10).join('\n')}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    url,
    configFile,
    logs,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}
