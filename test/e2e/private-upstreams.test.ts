/**
 * narthex in front of caches that are not public: one demands Basic auth (narthex reads a netrc
 * file), one a Bearer token. The real nix substitutes closures from both through narthex; a wrong
 * credential (rotated in with SIGHUP) is a 503 with the reason in the log and on the status page,
 * never a 404; and the secrets appear in no log line, no /metrics, no status page, no `explain`
 * output and no audit log.
 */
import assert from 'node:assert/strict'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()
const PASSWORD = 'netrc-secret-5a4b3c2d1e0f9a8b'
const TOKEN = 'bearer-secret-0f1e2d3c4b5a6978'
const WRONG = 'wrong-secret-99999999999999999'

describe('private upstreams (netrc and bearer token)', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let key: NixKey
  let basic: StaticServer
  let bearer: StaticServer
  let narthex: NarthexProcess
  let netrcFile: string
  let tokenFile: string
  /** Everything narthex showed, collected for the secret check at the end. */
  const outputs: string[] = []

  const netrc = (password: string) => `# private caches\nmachine 127.0.0.1 login narthex password ${password}\n`

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({
      'basic-lib': {},
      'basic-app': { deps: ['basic-lib'], bigBytes: 50_000 },
      'bearer-app': { deps: ['basic-lib'] },
      'basic-late': {},
      'bearer-late': {},
    })
    key = await nix.genKey('private-1')
    const all = Object.values(paths)
    await nix.sign(key.secretFile, all)
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, all)
    basic = await startStaticServer(dir, { auth: { kind: 'basic', login: 'narthex', password: PASSWORD } })
    bearer = await startStaticServer(dir, { auth: { kind: 'bearer', token: TOKEN } })
    netrcFile = join(nix.dir, 'upstream-netrc')
    tokenFile = join(nix.dir, 'upstream-token')
    await writeFile(netrcFile, netrc(PASSWORD), { mode: 0o600 })
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 })
    const up = (name: string, server: StaticServer, extra: Record<string, string>) => ({
      name,
      url: server.url,
      publicKeys: [key.publicKey],
      timeoutMs: 2000,
      retries: 0,
      ...extra,
    })
    narthex = await NarthexProcess.start({
      upstreams: [up('basic', basic, { netrcFile }), up('bearer', bearer, { bearerTokenFile: tokenFile })],
      rules: [
        { match: 'basic-*', upstreams: ['basic'] },
        { match: 'bearer-*', upstreams: ['bearer'] },
      ],
      cache: { unavailableTtlMs: 0 },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await basic?.close()
    await bearer?.close()
    await nix?.cleanup()
  })

  /** Sends SIGHUP and waits for the reload it causes. */
  async function reload(): Promise<void> {
    const before = narthex.logged('reloaded credentials').length
    narthex.child!.kill('SIGHUP')
    const deadline = Date.now() + 5000
    while (narthex.logged('reloaded credentials').length === before) {
      assert.ok(Date.now() < deadline, 'SIGHUP did not reload the credentials')
      await new Promise((r) => setTimeout(r, 20))
    }
    assert.equal(narthex.child!.exitCode, null, 'SIGHUP stopped narthex')
  }

  const narinfoStatus = async (path: string) => (await fetch(`${narthex.url}/${hashPartOf(path)}.narinfo`)).status

  test('closures substitute through narthex from both private upstreams', async () => {
    const { store } = await nix.substitute(narthex.url, [paths['basic-app'], paths['bearer-app']], [narthex.publicKey])
    for (const p of ['basic-lib', 'basic-app', 'bearer-app']) await nix.verifyPath(store, paths[p])
    assert.ok(basic.count('/') > 0 && bearer.count('/') > 0, 'an upstream was never asked')
    assert.ok(basic.requests.every((r) => r.authorization === `Basic ${Buffer.from(`narthex:${PASSWORD}`).toString('base64')}`))
    assert.ok(bearer.requests.every((r) => r.authorization === `Bearer ${TOKEN}`))
    assert.equal(narthex.logged('secret file').length, 0, 'mode-600 secret files were warned about')
  })

  test('a wrong credential, rotated in with SIGHUP, is 503 (never 404), logged at error and shown on the status page', async () => {
    await writeFile(netrcFile, netrc(WRONG))
    await writeFile(tokenFile, WRONG)
    await reload()
    for (const p of ['basic-late', 'bearer-late']) assert.equal(await narinfoStatus(paths[p]), 503, `${p} was not answered 503`)
    await assert.rejects(nix.substitute(narthex.url, [paths['basic-late']], [narthex.publicKey], { options: { 'download-attempts': '1' } }), NixCommandError)
    for (const name of ['basic', 'bearer']) {
      const lines = narthex.logs.filter((l) => l.level >= 50 && l.upstream === name && l.msg.includes('credentials rejected'))
      assert.ok(lines.length > 0, `no error line says why ${name} failed`)
    }
    const page = await (await fetch(`${narthex.url}/`)).text()
    outputs.push(page)
    assert.equal(page.match(/credentials rejected/g)?.length, 2, 'the status page does not show both upstreams rejecting')
    const explain = await runCli(['explain', '--config', narthex.configFile, '--fetch', paths['bearer-late']])
    outputs.push(explain.stdout, explain.stderr)
    assert.match(explain.stdout, /bearer +could not be asked: .*credentials rejected/)
    assert.match(explain.stdout, /unavailable \(503\)/)
  })

  test('the right credentials, rotated back with SIGHUP, work again', async () => {
    await writeFile(netrcFile, netrc(PASSWORD))
    await writeFile(tokenFile, TOKEN)
    await reload()
    const { store } = await nix.substitute(narthex.url, [paths['basic-late'], paths['bearer-late']], [narthex.publicKey])
    await nix.verifyPath(store, paths['bearer-late'])
    const page = await (await fetch(`${narthex.url}/`)).text()
    assert.ok(!page.includes('credentials rejected'))
  })

  test('a secret file readable by others is a warning at start', async () => {
    await chmod(tokenFile, 0o644)
    await narthex.stop()
    await narthex.restart()
    assert.ok(narthex.logged(`secret file ${tokenFile} is readable by everyone`).length > 0, 'no warning for a world-readable token file')
    await chmod(tokenFile, 0o600)
  })

  test('the secrets appear in no log line, /metrics, status page, explain output or audit log', async () => {
    const explain = await runCli(['explain', '--config', narthex.configFile, '--fetch', '--json', paths['basic-app']])
    assert.equal(explain.code, 0, explain.stderr)
    outputs.push(explain.stdout, explain.stderr)
    outputs.push(await (await fetch(`${narthex.url}/metrics`)).text(), await (await fetch(`${narthex.url}/`)).text())
    outputs.push((await runCli(['audit', '--config', narthex.configFile, '--json'])).stdout)
    outputs.push(await readFile(join(narthex.dataDir, 'audit.log'), 'utf8'))
    outputs.push(...narthex.logs.map((l) => JSON.stringify(l)))
    const secrets = [PASSWORD, TOKEN, WRONG, Buffer.from(`narthex:${PASSWORD}`).toString('base64'), Buffer.from(`narthex:${WRONG}`).toString('base64')]
    for (const text of outputs) for (const s of secrets) assert.ok(!text.includes(s), `a secret leaked into: ${text.slice(0, 200)}`)
    assert.ok(outputs.length > 5)
  })
})
