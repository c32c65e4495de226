/**
 * The external tools the ops tests check narthex's service files with
 * (systemd-analyze, nix-instantiate). As with `nix` in the end-to-end tests: with
 * CI=true a missing tool is a failure, elsewhere a loud skip.
 */
import { spawnSync } from 'node:child_process'

/**
 * Options for `test()` that skip it, loudly, when `command` is not installed.
 *
 * @param command - the executable, run once with `--version` to see that it works.
 * @param install - how to install it, for the message.
 * @returns `{}` when the command runs; otherwise `{ skip: reason }`, the reason also on stderr.
 * @throws Error when the command is missing and `CI=true`, so CI never skips these tests.
 */
export function needs(command: string, install: string): { skip?: string } {
  const r = spawnSync(command, ['--version'], { stdio: 'ignore' })
  if (r.status === 0) return {}
  if (process.env.CI === 'true') throw new Error(`${command} is required in CI: ${install}`)
  const reason = `SKIPPED: ${command} not found; install with ${install}`
  process.stderr.write(`${reason}\n`)
  return { skip: reason }
}
