/**
 * Runs the real narthex (`node bin/narthex.js serve`, the built CLI) as a child
 * process with its own config and data directory, for end-to-end tests.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** The built CLI entry point. */
export const BIN = join(ROOT, 'bin', 'narthex.js')

/** One log line narthex wrote (pino JSON). */
export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

/** A narthex process under test. */
export class NarthexProcess {
  url = ''
  publicKey = ''
  readonly logs: LogLine[] = []
  /** What the process wrote on stdout (narthex itself writes nothing there; node's diagnostics do). */
  stdout = ''
  child: ChildProcess | undefined
  #exit: Promise<number | null> | undefined

  private constructor(
    readonly dir: string,
    readonly configFile: string,
    readonly dataDir: string,
    readonly nodeArgs: readonly string[],
  ) {}

  /**
   * Writes `config` (dataDir, signingKeyFile and listen filled in when absent)
   * and starts narthex on a free port, with `nodeArgs` for node.
   */
  static async start(config: Record<string, unknown>, opts: { dir?: string; nodeArgs?: readonly string[] } = {}): Promise<NarthexProcess> {
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'narthex-e2e-')))
    const dataDir = join(dir, 'data')
    const configFile = join(dir, 'narthex.yaml')
    const full = { listen: '127.0.0.1:0', dataDir, signingKeyFile: join(dir, 'narthex.key'), log: { level: 'debug' }, ...config }
    await writeFile(configFile, stringify(full))
    const p = new NarthexProcess(dir, configFile, dataDir, opts.nodeArgs ?? [])
    await p.restart()
    return p
  }

  /** Starts (again) on the same config and data directory; resolves once it serves. */
  async restart(): Promise<void> {
    // A restart keeps the port, so URLs handed out before stay valid.
    const listen = this.url ? ['--listen', new URL(this.url).host] : []
    const child = spawn(process.execPath, [...this.nodeArgs, BIN, 'serve', '--config', this.configFile, ...listen], { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.stdout.on('data', (chunk: Buffer) => (this.stdout += chunk.toString()))
    this.#exit = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
    const lines = createInterface({ input: child.stderr })
    await new Promise<void>((resolve, reject) => {
      // The "serving" line is an info line: the config's log level must let it through.
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`narthex did not start (log.level must be info or lower): ${JSON.stringify(this.logs.slice(-5))}`))
      }, 15_000)
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`narthex exited with ${code} before serving: ${JSON.stringify(this.logs.slice(-5))}`))
      })
      lines.on('line', (line) => {
        let entry: LogLine
        try {
          entry = JSON.parse(line) as LogLine
        } catch {
          entry = { level: 50, msg: line }
        }
        this.logs.push(entry)
        if (entry.msg === 'narthex is serving') {
          this.url = entry.url as string
          this.publicKey = entry.publicKey as string
          clearTimeout(timer)
          resolve()
        }
      })
    })
  }

  /** Log lines whose message contains `text`. */
  logged(text: string): LogLine[] {
    return this.logs.filter((l) => l.msg.includes(text))
  }

  /** Waits (up to `timeoutMs`) until a log line containing `text` appears; returns the matching lines. */
  async waitForLog(text: string, timeoutMs = 5000): Promise<LogLine[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.logged(text)
      if (found.length > 0 || Date.now() > deadline) return found
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** Sends a signal and waits for the process to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.child?.exitCode ?? null
    this.child.kill(signal)
    return this.#exit!
  }

  /** Stops the process and removes its directory. */
  async cleanup(): Promise<void> {
    await this.stop('SIGKILL')
    await rm(this.dir, { recursive: true, force: true })
  }
}

/**
 * Runs the narthex CLI to completion and resolves with its exit code and output
 * (never rejects on a non-zero exit). Asynchronous, so servers in the test
 * process keep answering while it runs.
 */
export function runCli(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 60_000 })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}
