/**
 * A company cache: `nix copy --to` pushes into narthex (authenticated, signed
 * by a push key), and clients substitute the pushed paths trusting narthex.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { formatNarInfo, parseNarInfo, parseSecretKey, signNarInfo } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { clientCommand, NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'

const skip = nixSkipReason()
const TOKEN = 'push-token-0123456789abcdef'

for (const workers of [0, 2]) {
  describe(`pushing with nix copy --to (workers: ${workers})`, { skip }, () => {
    let nix: NixEnv
    let paths: Record<string, string>
    let corp: NixKey
    let stranger: NixKey
    let narthex: NarthexProcess
    let netrc: string

    before(async () => {
      nix = await NixEnv.create()
      paths = await nix.buildClosure({ 'corp-base': {}, 'corp-app': { deps: ['corp-base'], bigBytes: 100_000 }, 'corp-other': {} })
      corp = await nix.genKey('corp-1')
      stranger = await nix.genKey('stranger-1')
      narthex = await NarthexProcess.start({
        workers,
        upstreams: [],
        rules: [{ match: '*', upstreams: [], minSignatures: 0 }],
        push: { tokens: [TOKEN], publicKeys: [corp.publicKey], minSignatures: 1 },
      })
      netrc = join(nix.dir, 'netrc')
      await writeFile(netrc, `machine 127.0.0.1 login ci password ${TOKEN}\n`)
    })

    after(async () => {
      await narthex?.cleanup()
      await nix?.cleanup()
    })

    // write-nar-listing=true makes Nix PUT `<hash>.ls` before anything else.
    const push = (keyFile: string, p: string, netrcFile = netrc) =>
      nix.push(`${narthex.url}?secret-key=${keyFile}&write-nar-listing=true`, [p], { 'netrc-file': netrcFile })

    test('a signed, authenticated push is admitted and clients substitute it trusting narthex only', async () => {
      await push(corp.secretFile, paths['corp-app'])
      const { store } = await nix.substitute(narthex.url, [paths['corp-app']], [narthex.publicKey])
      for (const p of [paths['corp-base'], paths['corp-app']]) await nix.verifyPath(store, p)
      const audit = await runCli(['audit', '--config', narthex.configFile, '--json'])
      const pushed = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { decision: string; storePath: string; signers: string[] })
      assert.deepEqual(pushed.filter((e) => e.decision === 'push').map((e) => e.storePath).sort(), [paths['corp-app'], paths['corp-base']].sort())
      // Pushing again is a no-op, not an error.
      await push(corp.secretFile, paths['corp-app'])
      const listing = await fetch(`${narthex.url}/${hashPartOf(paths['corp-app'])}.ls`)
      assert.equal(listing.status, 200)
      const root = (JSON.parse(await listing.text()) as { root: { entries: Record<string, unknown> } }).root
      assert.deepEqual(Object.keys(root.entries), ['bin', 'blob', 'deps', 'link', 'name', 'readme.txt'])
    })

    test('nix store copy-log --to narthex stores the build log, and a client reads it back', async () => {
      const drv = (await nix.run('nix-store', ['-q', '--deriver', paths['corp-other']])).stdout.trim()
      const base = drv.slice('/nix/store/'.length)
      // A chroot store holding the derivation and its log, as Nix keeps logs: bzip2 under var/log/nix/drvs.
      // `--derivation`: the .drv itself, not its outputs.
      const copyDrv = (to: string) => nix.run('nix', ['copy', '--no-check-sigs', '--derivation', '--to', to, drv])
      const withLog = resolve(nix.freshDir('with-log'))
      await copyDrv(withLog)
      const logDir = join(withLog, 'nix/var/log/nix/drvs', base.slice(0, 2))
      await mkdir(logDir, { recursive: true })
      await writeFile(join(logDir, `${base.slice(2)}.bz2`), execFileSync('bzip2', ['-c'], { input: `building ${base}\n` }))
      const client = (args: string[]) => nix.run(clientCommand('nix'), args)
      await client(['store', 'copy-log', '--store', withLog, '--to', narthex.url, drv, '--option', 'netrc-file', netrc])
      const served = await fetch(`${narthex.url}/log/${base}`)
      assert.equal(served.status, 200)
      assert.equal(await served.text(), `building ${base}\n`)
      // A client whose own store has no log finds it on narthex.
      const withoutLog = resolve(nix.freshDir('without-log'))
      await copyDrv(withoutLog)
      const { stdout } = await client(['log', '--store', withoutLog, '--option', 'substituters', narthex.url, drv])
      assert.equal(stdout, `building ${base}\n`)
      const unauth = await fetch(`${narthex.url}/log/${base}`, { method: 'PUT', body: 'forged' })
      assert.equal(unauth.status, 401)
    })

    test('without the token, or signed by an unknown key, a push is refused', async () => {
      const empty = join(nix.dir, 'empty-netrc')
      await writeFile(empty, '')
      await assert.rejects(push(corp.secretFile, paths['corp-other'], empty), NixCommandError)
      await assert.rejects(push(stranger.secretFile, paths['corp-other']), NixCommandError)
      assert.equal((await fetch(`${narthex.url}/${hashPartOf(paths['corp-other'])}.narinfo`)).status, 404)
    })

    test('a push conflicting with an admitted NarHash, or whose NAR does not match, is refused', async () => {
      const hash = hashPartOf(paths['corp-app'])
      const served = parseNarInfo(await (await fetch(`${narthex.url}/${hash}.narinfo`)).text())
      const forged = signNarInfo({ ...served, narHash: { algorithm: 'sha256', digest: Buffer.alloc(32, 7) }, sigs: [] }, parseSecretKey(corp.secretKey))
      const auth = { authorization: `Bearer ${TOKEN}` }
      const conflict = await fetch(`${narthex.url}/${hash}.narinfo`, { method: 'PUT', headers: auth, body: formatNarInfo(forged) })
      assert.equal(conflict.status, 409)
      const badNar = await fetch(`${narthex.url}/nar/${'1'.repeat(52)}.nar.xz`, { method: 'PUT', headers: auth, body: 'not the named bytes' })
      assert.equal(badNar.status, 400)
      const unauth = await fetch(`${narthex.url}/${hash}.narinfo`, { method: 'PUT', body: formatNarInfo(forged) })
      assert.equal(unauth.status, 401)
      const check = await runCli(['audit', '--config', narthex.configFile, '--json', '--path', paths['corp-app']])
      assert.match(check.stdout, /"reason":"PUSH_CONFLICT"/)
    })

    test('pushed NARs are never evicted: there is no upstream to fetch them again from', async () => {
      assert.equal(await narthex.stop(), 0)
      const gc = await runCli(['gc', '--max-size', '1', '--config', narthex.configFile])
      assert.equal(gc.code, 1)
      assert.match(gc.stdout, /evicted 0 NAR file.*\n.*pinned, pushed or imported/)
      await narthex.restart()
      const { store } = await nix.substitute(narthex.url, [paths['corp-app']], [narthex.publicKey])
      await nix.verifyPath(store, paths['corp-app'])
    })
  })
}
