/**
 * `narthex serve`'s arguments read without yargs (src/cli/serve-args.ts): every
 * form read that way must mean what yargs, with the options `serve` declares,
 * reads from it; everything else must be left to yargs.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import yargs from 'yargs'
import { DEFAULT_CONFIG, serveOptions, withCommon } from '../../src/cli/main.js'
import { parseServeArgs } from '../../src/cli/serve-args.js'

/** What yargs reads from `args` with serve's options, or the message it fails with. */
async function byYargs(args: string[]): Promise<{ config: string; data?: string | undefined; listen?: string | undefined } | string> {
  let seen: { config: string; data?: string | undefined; listen?: string | undefined } | undefined
  try {
    await withCommon(yargs(args))
      .command('serve', '', (y) => serveOptions(y), (argv) => {
        seen = { config: argv.config, data: argv.data, listen: argv.listen }
      })
      .strict()
      .exitProcess(false)
      .fail((msg, err) => {
        throw err ?? new Error(msg)
      })
      .parseAsync()
  } catch (err) {
    return (err as Error).message
  }
  return seen ?? 'no command ran'
}

const READ = [
  ['serve'],
  ['serve', '--config', 'a.yaml'],
  ['serve', '--config=a.yaml'],
  ['serve', '-c', 'a.yaml'],
  ['serve', '--data', '/var/lib/x', '--listen', '127.0.0.1:5557'],
  ['serve', '--listen=[::1]:80', '--data=/d', '-c', 'b.yaml'],
  ['serve', '--config', 'with space.yaml'],
  ['serve', '--config', 'a=b.yaml'],
]

test('each form serve-args reads, yargs reads the same', async () => {
  for (const args of READ) {
    const quick = parseServeArgs(args, DEFAULT_CONFIG)
    assert.ok(quick, `${args.join(' ')}: left to yargs`)
    assert.deepEqual(quick, await byYargs(args), args.join(' '))
  }
})

test('anything else is left to yargs: help, version, unknown, repeated or missing values, other commands', () => {
  const LEFT = [
    [],
    ['mirror'],
    ['serve', '--help'],
    ['serve', '-h'],
    ['serve', '--version'],
    ['serve', '--bogus'],
    ['serve', 'extra'],
    ['serve', '--config'],
    ['serve', '--config='],
    ['serve', '--config', '--listen', 'x'],
    ['serve', '--config', 'a', '--config', 'b'],
    ['serve', '-c', 'a', '--config', 'b'],
    ['serve', '--no-config'],
    ['serve', '-ca.yaml'],
    ['--config', 'a.yaml', 'serve'],
    ['serve', '--listen', '-1'],
  ]
  for (const args of LEFT) assert.equal(parseServeArgs(args, DEFAULT_CONFIG), undefined, args.join(' '))
})
