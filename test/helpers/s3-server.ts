/**
 * A real S3 server for tests: OpenStack Swift with its s3api middleware, from the Debian sid root
 * scripts/s3-root.sh prepares. Each {@link startS3Server} runs a private Swift (proxy, account,
 * container and object servers, chrooted into the root) on its own free ports with its own rings
 * and device directory, so test files can run in parallel. docs/TESTING.md explains the setup.
 *
 * @module
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, closeSync, constants, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { S3Client } from '@aws-sdk/client-s3'

/** A running private Swift with its S3 API. */
export interface S3TestServer {
  /** `http://127.0.0.1:PORT`, the proxy; path-style requests only. */
  readonly endpoint: string
  /** `us-east-1`, the s3api location. */
  readonly region: string
  /** `test:tester`, the tempauth user. */
  readonly accessKeyId: string
  readonly secretAccessKey: string
  /** Environment for a child narthex process: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (+ nothing else). */
  readonly env: Record<string, string>
  /** Creates a bucket; publicRead: anonymous GET allowed (so a plain HTTP client like `nix copy --from http://…/bucket` can read it). */
  createBucket(name: string, options?: { publicRead?: boolean }): Promise<void>
  /** An S3Client for the test's own checks (list/get/put objects). */
  client(): Promise<S3Client>
  /** Stops the four servers and removes the instance's configuration and data. */
  stop(): Promise<void>
}

/** Where scripts/s3-root.sh puts the root (`NARTHEX_S3_ROOT` moves it). */
const ROOT = process.env.NARTHEX_S3_ROOT ?? '/var/cache/narthex-ci/sid-swift'
const PREPARE_HINT = 'run scripts/s3-root.sh as root (see docs/TESTING.md)'
const REGION = 'us-east-1'
const ACCESS_KEY_ID = 'test:tester'
const SECRET_ACCESS_KEY = 'testing'
/** Instance directories inside the root. */
const INSTANCES = 'srv/narthex-s3'
const START_TIMEOUT_MS = 90_000
const STOP_GRACE_MS = 5_000
const SERVERS = ['account', 'container', 'object', 'proxy'] as const
type ServerName = (typeof SERVERS)[number]

function rootProblem(): string | undefined {
  if (process.getuid?.() !== 0) return 'S3 tests run Swift chrooted and need root'
  try {
    accessSync(join(ROOT, 'usr/bin/swift-proxy-server'), constants.X_OK)
  } catch {
    return `no Swift root at ${ROOT}`
  }
  if (spawnSync('setpriv', ['--version']).status !== 0) return 'setpriv (util-linux) is missing'
  return undefined
}

/**
 * Skip reason for tests that need the S3 server: `test('…', { skip: s3SkipReason() }, …)`.
 *
 * @returns `undefined` when the Swift root is there and usable; otherwise a loud reason, also
 *   printed to stderr.
 * @throws Error instead when `CI=true`, so CI never silently skips these tests.
 */
export function s3SkipReason(): string | undefined {
  const problem = rootProblem()
  if (problem === undefined) return undefined
  if (process.env.CI === 'true') throw new Error(`the S3 server is required in CI: ${problem}; ${PREPARE_HINT}`)
  const reason = `SKIPPED: ${problem}; ${PREPARE_HINT}`
  process.stderr.write(`${reason}\n`)
  return reason
}

/** Children of every running instance, killed when the test process exits without stop(). */
const running = new Set<{ children: ChildProcess[]; hostDir: string }>()
process.on('exit', () => {
  for (const inst of running) {
    for (const c of inst.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    rmSync(inst.hostDir, { recursive: true, force: true })
  }
})

/** Instance directories are named `<pid>-<random>`; those of processes gone (killed outright) are removed. */
function removeStaleInstances(): void {
  let names: string[]
  try {
    names = readdirSync(join(ROOT, INSTANCES))
  } catch {
    return
  }
  for (const name of names) {
    const pid = Number(name.split('-')[0])
    if (!Number.isInteger(pid) || pid <= 0) continue
    try {
      process.kill(pid, 0)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(ROOT, INSTANCES, name), { recursive: true, force: true })
    }
  }
}

/** Distinct free ports: all listeners are held open until every port is known. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => resolve(s))
    })),
  )
  const ports = servers.map((s) => (s.address() as AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

/** A command run inside the root, with a clean environment. */
function inRoot(args: string[], dir: string): string[] {
  return ['chroot', ROOT, 'env', '-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8', `PYTHONPATH=${dir}`, ...args]
}

function backendConf(name: Exclude<ServerName, 'proxy'>, port: number, dir: string): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
devices = ${dir}/node
mount_check = false
workers = 0
user = root
swift_dir = ${dir}
log_level = WARNING

[pipeline:main]
pipeline = healthcheck ${name}-server

[app:${name}-server]
use = egg:swift#${name}

[filter:healthcheck]
use = egg:swift#healthcheck
`
}

function proxyConf(port: number, dir: string): string {
  const filters = ['catch_errors', 'gatekeeper', 'healthcheck', 'proxy_logging', 'listing_formats', 'copy', 'dlo']
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = root
swift_dir = ${dir}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats s3api anonread tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = ${REGION}

[filter:anonread]
paste.filter_factory = narthex_anon_read:filter_factory

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = ${SECRET_ACCESS_KEY} .admin

[filter:slo]
use = egg:swift#slo
allow_async_delete = false

[filter:proxy-logging]
use = egg:swift#proxy_logging

${filters.filter((f) => f !== 'proxy_logging').map((f) => `[filter:${f}]\nuse = egg:swift#${f}\n`).join('\n')}`
}

const SWIFT_CONF = `[swift-hash]
swift_hash_path_suffix = narthex-test
swift_hash_path_prefix = narthex-test

[storage-policy:0]
name = Policy-0
default = yes
`

/** swift-ring-builder's own code, run once for all three rings: nine CLI runs take ~15 s here. */
function ringsScript(dir: string, ports: Record<ServerName, number>): string {
  const cmds = (['account', 'container', 'object'] as const).flatMap((name) => {
    const b = `${dir}/${name}.builder`
    return [[b, 'create', '10', '1', '1'], [b, 'add', `r1z1-127.0.0.1:${ports[name]}/d1`, '1'], [b, 'rebalance']]
  })
  return `import sys
from swift.cli import ringbuilder
for args in ${JSON.stringify(cmds)}:
    try:
        ringbuilder.main(['swift-ring-builder'] + args)
    except SystemExit as e:
        if e.code not in (None, 0, 1):
            sys.exit('swift-ring-builder %s failed: %s' % (' '.join(args), e.code))
`
}

/**
 * S3 answers an unsigned path-style GET of an object in a public-read bucket; Swift's s3api passes
 * unsigned requests on to the Swift API, which expects /v1/<account>/… . This filter maps such a
 * request onto the test account and, when the container's read ACL is public (what PutBucketAcl
 * public-read sets), authorizes it, segments of multipart objects included. Anything else goes on to
 * tempauth, which refuses it (401).
 */
const ANON_READ_PY = `from swift.proxy.controllers.base import get_container_info

SKIP = ('v1', 'auth', 'healthcheck', 'info')

def filter_factory(global_conf, **local_conf):
    def factory(app):
        def middleware(env, start_response):
            parts = env.get('PATH_INFO', '').split('/', 2)
            anonymous = ('s3api.auth_details' not in env and 'HTTP_AUTHORIZATION' not in env
                         and 'HTTP_X_AUTH_TOKEN' not in env and 'HTTP_X_STORAGE_TOKEN' not in env)
            if (anonymous and env['REQUEST_METHOD'] in ('GET', 'HEAD') and len(parts) == 3
                    and parts[1] not in SKIP and parts[1] != '' and parts[2] != ''):
                env['PATH_INFO'] = '/v1/AUTH_test' + env['PATH_INFO']
                info = get_container_info(env, app, swift_source='NARTHEX')
                if '.r:*' in (info.get('read_acl') or '').split(','):
                    env['swift.authorize_override'] = True
                    env['swift.authorize'] = lambda req: None
            return app(env, start_response)
        return middleware
    return factory
`

function logTail(hostDir: string, name: ServerName): string {
  try {
    return readFileSync(join(hostDir, `${name}.log`), 'utf8').split('\n').slice(-15).join('\n')
  } catch {
    return '(no log)'
  }
}

async function waitHealthy(ports: Record<ServerName, number>, children: Map<ServerName, ChildProcess>, hostDir: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS
  for (const name of SERVERS) {
    for (;;) {
      const child = children.get(name)!
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`swift-${name}-server exited (${child.exitCode ?? child.signalCode}) while starting:\n${logTail(hostDir, name)}`)
      }
      try {
        const res = await fetch(`http://127.0.0.1:${ports[name]}/healthcheck`, { signal: AbortSignal.timeout(2_000) })
        if (res.ok) break
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`swift-${name}-server not healthy after ${START_TIMEOUT_MS} ms:\n${logTail(hostDir, name)}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

/** Runs the rings script in the root, with swift-ring-builder's own code. */
function buildRings(dir: string): Promise<void> {
  const [cmd, ...args] = inRoot(['python3', `${dir}/rings.py`], dir)
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    child.once('error', reject)
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`building the rings failed (${code}):\n${out}`))))
  })
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGTERM')
  })
}

/**
 * Starts a private Swift (its own free ports, rings and device dir, so test files can run in
 * parallel), ready when every server's /healthcheck answers. The servers die with the test
 * process (parent-death signal), so a crashed test leaves none behind.
 *
 * @throws Error with the failing server's log when a server does not come up.
 */
export async function startS3Server(): Promise<S3TestServer> {
  const problem = rootProblem()
  if (problem !== undefined) throw new Error(`cannot start the S3 server: ${problem}; ${PREPARE_HINT}`)
  removeStaleInstances()
  const dir = `/${INSTANCES}/${process.pid}-${randomBytes(4).toString('hex')}`
  const hostDir = join(ROOT, dir)
  const [account, container, object, proxy] = await freePorts(4)
  const ports: Record<ServerName, number> = { account, container, object, proxy }
  const children = new Map<ServerName, ChildProcess>()
  const inst = { children: [] as ChildProcess[], hostDir }
  running.add(inst)
  const stop = async (): Promise<void> => {
    await Promise.all(inst.children.map(stopChild))
    rmSync(hostDir, { recursive: true, force: true })
    running.delete(inst)
  }
  try {
    await mkdir(join(hostDir, 'node', 'd1'), { recursive: true })
    await writeFile(join(hostDir, 'swift.conf'), SWIFT_CONF)
    await writeFile(join(hostDir, 'narthex_anon_read.py'), ANON_READ_PY)
    await writeFile(join(hostDir, 'rings.py'), ringsScript(dir, ports))
    await writeFile(join(hostDir, 'proxy-server.conf'), proxyConf(ports.proxy, dir))
    for (const name of ['account', 'container', 'object'] as const) {
      await writeFile(join(hostDir, `${name}-server.conf`), backendConf(name, ports[name], dir))
    }
    const startServer = (name: ServerName): void => {
      const log = openSync(join(hostDir, `${name}.log`), 'a')
      // setpriv's parent-death signal survives the exec chain (unshare, sh, chroot, env, python):
      // the server gets SIGKILL when this process dies, however it dies. The object server needs
      // /proc (it links files through /proc/self/fd); mounted in a private mount namespace, it
      // vanishes with the server.
      const child = spawn('setpriv', ['--pdeathsig', 'KILL', 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t proc proc "$0/proc" && exec "$@"', ROOT,
        ...inRoot([`swift-${name}-server`, `${dir}/${name}-server.conf`, '--verbose'], dir)], {
        stdio: ['ignore', log, log],
      })
      closeSync(log)
      // A test that forgets stop() must not hang its process; the exit hook still kills these.
      child.unref()
      children.set(name, child)
      inst.children.push(child)
    }
    // The backends serve without rings; only the proxy needs them, so they start meanwhile.
    for (const name of ['account', 'container', 'object'] as const) startServer(name)
    await buildRings(dir)
    startServer('proxy')
    await waitHealthy(ports, children, hostDir)
  } catch (err) {
    await stop()
    throw err
  }

  const endpoint = `http://127.0.0.1:${ports.proxy}`
  let stopped: Promise<void> | undefined
  const server: S3TestServer = {
    endpoint,
    region: REGION,
    accessKeyId: ACCESS_KEY_ID,
    secretAccessKey: SECRET_ACCESS_KEY,
    env: { AWS_ACCESS_KEY_ID: ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY, AWS_REGION: REGION },
    async client() {
      const { S3Client } = await import('@aws-sdk/client-s3')
      return new S3Client({
        endpoint,
        region: REGION,
        forcePathStyle: true,
        credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY },
      })
    },
    async createBucket(name, options = {}) {
      const { CreateBucketCommand, PutBucketAclCommand } = await import('@aws-sdk/client-s3')
      const client = await server.client()
      try {
        await client.send(new CreateBucketCommand({ Bucket: name }))
        // s3api turns the canned ACL into the container read ACL `.r:*,.rlistings`.
        if (options.publicRead === true) await client.send(new PutBucketAclCommand({ Bucket: name, ACL: 'public-read' }))
      } finally {
        client.destroy()
      }
    },
    stop() {
      stopped ??= stop()
      return stopped
    },
  }
  return server
}
