/**
 * A company cache: `nix copy --to` pushes into narthex (authenticated, signed
 * by a push key), and clients substitute the pushed paths trusting narthex.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { formatNarInfo, parseNarInfo, parseSecretKey, signNarInfo } from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'

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

    const push = (keyFile: string, p: string, netrcFile = netrc) =>
      nix.push(`${narthex.url}?secret-key=${keyFile}`, [p], { 'netrc-file': netrcFile })

    test('a signed, authenticated push is admitted and clients substitute it trusting narthex only', async () => {
      await push(corp.secretFile, paths['corp-app'])
      const { store } = await nix.substitute(narthex.url, [paths['corp-app']], [narthex.publicKey])
      for (const p of [paths['corp-base'], paths['corp-app']]) await nix.verifyPath(store, p)
      const audit = await runCli(['audit', '--config', narthex.configFile, '--json'])
      const pushed = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { decision: string; storePath: string; signers: string[] })
      assert.deepEqual(pushed.filter((e) => e.decision === 'push').map((e) => e.storePath).sort(), [paths['corp-app'], paths['corp-base']].sort())
      // Pushing again is a no-op, not an error.
      await push(corp.secretFile, paths['corp-app'])
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
