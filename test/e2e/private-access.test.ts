/**
 * A private narthex (`access.read: tokens`): the real nix substitutes only with the netrc line
 * `narthex client-config` describes; pushes need the push scope and stay inside the token's
 * `pushMatch`, every admission and refusal audited with the token's name. With worker processes
 * the check holds at every front door, hits answered by the workers included.
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()
const LAPTOPS = 'laptops-token-3f2e1d0c9b8a7766'
const CI = 'ci-token-a1b2c3d4e5f60718293a'

for (const workers of [0, 2]) {
  describe(`a private narthex (workers: ${workers})`, { skip }, () => {
    let nix: NixEnv
    let paths: Record<string, string>
    let upKey: NixKey
    let corp: NixKey
    let upstream: StaticServer
    let narthex: NarthexProcess
    const netrcs: Record<string, string> = {}

    before(async () => {
      nix = await NixEnv.create()
      paths = await nix.buildClosure({
        'pub-lib': {},
        'pub-app': { deps: ['pub-lib'], bigBytes: 40_000 },
        'corp-tool': {},
        'other-tool': {},
      })
      upKey = await nix.genKey('upstream-1')
      corp = await nix.genKey('corp-1')
      await nix.sign(upKey.secretFile, [paths['pub-app']])
      const dir = nix.freshDir('cache')
      await nix.copyToCache(dir, [paths['pub-app']])
      upstream = await startStaticServer(dir)
      const tokens = join(nix.dir, 'tokens')
      await writeFile(`${tokens}-laptops`, `${LAPTOPS}\n`, { mode: 0o600 })
      await writeFile(`${tokens}-ci`, `${CI}\n`, { mode: 0o600 })
      narthex = await NarthexProcess.start({
        workers,
        upstreams: [{ name: 'up', url: upstream.url, publicKeys: [upKey.publicKey], timeoutMs: 2000, retries: 0 }],
        rules: [
          { match: 'pub-*', upstreams: ['up'] },
          { match: '*', upstreams: [], minSignatures: 0 },
        ],
        push: { publicKeys: [corp.publicKey], minSignatures: 1 },
        log: { level: 'debug', requests: 'info' },
        access: {
          read: 'tokens',
          tokens: [
            { name: 'laptops', secretFile: `${tokens}-laptops`, scopes: ['read'] },
            { name: 'ci', secretFile: `${tokens}-ci`, scopes: ['read', 'push'], pushMatch: ['corp-*'] },
          ],
        },
      })
      const host = new URL(narthex.url).hostname
      for (const [name, token] of [['laptops', LAPTOPS], ['ci', CI]]) {
        // The line `narthex client-config` tells clients to write: no login.
        netrcs[name] = join(nix.dir, `netrc-${name}`)
        await writeFile(netrcs[name], `machine ${host} password ${token}\n`)
      }
    })

    after(async () => {
      await narthex?.cleanup()
      await upstream?.close()
      await nix?.cleanup()
    })

    const substitute = (p: string, netrc?: string) =>
      nix.substitute(narthex.url, [p], [narthex.publicKey], { options: { 'download-attempts': '1', ...(netrc ? { 'netrc-file': netrc } : {}) } })
    const push = (p: string, netrc: string) => nix.push(`${narthex.url}?secret-key=${corp.secretFile}`, [p], { 'netrc-file': netrc })
    const auditEntries = async () =>
      (await runCli(['audit', '--config', narthex.configFile, '--json'])).stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { decision: string; storePath: string; token?: string; reason?: string; message?: string })

    test('without credentials nix cannot substitute: narthex answers 401 and reveals nothing', async () => {
      await assert.rejects(substitute(paths['pub-app']), NixCommandError)
      const res = await fetch(`${narthex.url}/${hashPartOf(paths['pub-app'])}.narinfo`)
      assert.equal(res.status, 401)
      assert.equal(res.headers.get('www-authenticate'), 'Basic realm="narthex"')
      assert.equal(upstream.requests.length, 0, 'an unauthenticated request reached the upstream')
    })

    test('with the netrc of a read token nix substitutes the closure', async () => {
      const { store } = await substitute(paths['pub-app'], netrcs.laptops)
      for (const p of ['pub-lib', 'pub-app']) await nix.verifyPath(store, paths[p])
      // Now cached: with workers, a hit is answered by a worker, which must check too.
      const url = `${narthex.url}/${hashPartOf(paths['pub-app'])}.narinfo`
      // Several authenticated asks first, so that every worker holds the narinfo in memory.
      for (let i = 0; i < 6; i++) assert.equal((await fetch(url, { headers: { authorization: `Bearer ${LAPTOPS}` } })).status, 200)
      for (let i = 0; i < 6; i++) assert.equal((await fetch(url)).status, 401, 'a cached narinfo was served without a token')
    })

    test('/healthz stays open; /metrics and the status page need a read token', async () => {
      assert.equal((await fetch(`${narthex.url}/healthz`)).status, 200)
      for (const route of ['/metrics', '/', '/nix-cache-info']) {
        assert.equal((await fetch(`${narthex.url}${route}`)).status, 401, `${route} was open`)
        const basic = `Basic ${Buffer.from(`prometheus:${LAPTOPS}`).toString('base64')}`
        assert.equal((await fetch(`${narthex.url}${route}`, { headers: { authorization: basic } })).status, 200, `${route} refused a read token`)
      }
    })

    test('a read-only token cannot push', async () => {
      await assert.rejects(push(paths['corp-tool'], netrcs.laptops), NixCommandError)
      assert.equal((await fetch(`${narthex.url}/${hashPartOf(paths['corp-tool'])}.narinfo`, { headers: { authorization: `Bearer ${LAPTOPS}` } })).status, 404)
    })

    test('a push token pushes a path its pushMatch allows, audited with its name', async () => {
      await push(paths['corp-tool'], netrcs.ci)
      const admitted = (await auditEntries()).filter((e) => e.decision === 'push' && e.storePath === paths['corp-tool'])
      assert.deepEqual(admitted.map((e) => e.token), ['ci'])
      const { store } = await substitute(paths['corp-tool'], netrcs.laptops)
      await nix.verifyPath(store, paths['corp-tool'])
    })

    test('a push outside the token\'s pushMatch is 403 with the reason, and audited', async () => {
      await assert.rejects(push(paths['other-tool'], netrcs.ci), NixCommandError)
      await nix.sign(corp.secretFile, [paths['other-tool']])
      const dir = nix.freshDir('other')
      await nix.copyToCache(dir, [paths['other-tool']])
      const narinfo = await readFile(join(dir, `${hashPartOf(paths['other-tool'])}.narinfo`), 'utf8')
      const res = await fetch(`${narthex.url}/${hashPartOf(paths['other-tool'])}.narinfo`, { method: 'PUT', headers: { authorization: `Bearer ${CI}` }, body: narinfo })
      assert.equal(res.status, 403)
      assert.match(await res.text(), /token ci may not push .*other-tool.*pushMatch: corp-\*/)
      const refused = (await auditEntries()).filter((e) => e.decision === 'refuse' && e.storePath === paths['other-tool'])
      assert.ok(refused.length >= 1 && refused.every((e) => e.token === 'ci' && e.reason === 'PUSH_REFUSED'), JSON.stringify(refused))
    })

    test('tokens appear in no log line, and client-config prints a placeholder', async () => {
      const logs = narthex.logs.map((l) => JSON.stringify(l)).join('\n')
      for (const t of [LAPTOPS, CI]) assert.ok(!logs.includes(t), 'a token is in the log')
      assert.ok(narthex.logs.some((l) => l.tokenName === 'ci' && l.msg === 'push admitted'), 'no log line names the pushing token')
      const requests = narthex.logs.filter((l) => l.msg === 'request')
      assert.ok(requests.some((l) => l.tokenName === 'laptops' && l.route === 'narinfo'), 'no request log line names the reading token')
      assert.ok(requests.some((l) => l.tokenName === 'ci' && l.route === 'push'), 'no request log line names the pushing token')
      const cc = await runCli(['client-config', '--config', narthex.configFile])
      assert.equal(cc.code, 0, cc.stderr)
      assert.match(cc.stdout, /^netrc-file = \/etc\/nix\/netrc$/m)
      assert.match(cc.stdout, /machine 127\.0\.0\.1 password <your token>/)
      assert.match(cc.stdout, /nix\.settings\.netrc-file/)
      for (const t of [LAPTOPS, CI]) assert.ok(!cc.stdout.includes(t))
    })
  })
}
