/**
 * Client access checks, pure: which Authorization headers present which secret, which token a
 * request carries, and what the gate lets through for public and private reading.
 */
import assert from 'node:assert/strict'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { AccessControl, MAX_AUTHORIZATION_BYTES, presentedSecret } from '../../src/server/index.js'

const READ = 'read-token-0123456789abcdef'
const CI = 'ci-token-fedcba9876543210'
let dir: string
let readFile: string

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'narthex-access-test-'))
  readFile = join(dir, 'laptops')
  await writeFile(readFile, `${READ}\n`)
  await chmod(readFile, 0o600)
  await writeFile(join(dir, 'ci'), CI)
  await chmod(join(dir, 'ci'), 0o644)
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const request = (method: string, url: string, authorization?: string) =>
  ({ method, url, headers: authorization === undefined ? {} : { authorization } }) as unknown as IncomingMessage

function control(privateRead = true): AccessControl {
  return new AccessControl(privateRead, [
    { name: 'laptops', secretFile: readFile, scopes: ['read'] },
    { name: 'ci', secretFile: join(dir, 'ci'), scopes: ['read', 'push'], pushMatch: ['corp-*'] },
  ])
}

test('the secret is the Bearer token or the Basic password (any login); anything else presents none', () => {
  assert.equal(presentedSecret(`Bearer ${READ}`), READ)
  assert.equal(presentedSecret(`bearer ${READ}`), READ)
  assert.equal(presentedSecret(basic('anyone', READ)), READ)
  assert.equal(presentedSecret(basic('', 'pa:ss')), 'pa:ss')
  for (const bad of [undefined, '', 'Bearer', 'Bearer ', `Digest ${READ}`, `Token ${READ}`, 'Basic !!!', 'Basic bm9jb2xvbg==', basic('user', ''), `Bearer ${READ} extra`, `Bearer ${'a'.repeat(MAX_AUTHORIZATION_BYTES)}`]) {
    assert.equal(presentedSecret(bad), undefined, `${JSON.stringify(bad?.slice(0, 40))} presented a secret`)
  }
})

test('a request carries the token whose secret it presents, by name only', () => {
  const access = control()
  assert.equal(access.identify(`Bearer ${CI}`)?.name, 'ci')
  assert.equal(access.identify(basic('nix', READ))?.name, 'laptops')
  assert.equal(access.identify(`Bearer ${READ}x`), undefined)
  assert.equal(access.identify(undefined), undefined)
  assert.match(access.warnings.join('\n'), /ci is readable by everyone/)
  assert.ok(!JSON.stringify(access.identify(`Bearer ${CI}`)).includes(CI), 'the token object holds its secret')
})

test('private reading: 401 without a valid token except /healthz; reading needs the read scope', () => {
  const access = control()
  const refused = (r: ReturnType<AccessControl['gate']>) => (r.ok ? 'ok' : `${r.refusal.status} ${r.refusal.message}`)
  assert.equal(refused(access.gate(request('GET', '/healthz'))), 'ok')
  const none = refused(access.gate(request('GET', '/nix-cache-info')))
  assert.equal(none, '401 authentication required')
  for (const [method, url, auth] of [['GET', '/', 'Bearer wrong-but-long-enough'], ['HEAD', '/metrics', 'Basic !'], ['PUT', '/x.narinfo', undefined]] as const) {
    assert.equal(refused(access.gate(request(method, url, auth))), none, `${method} ${url} was answered differently`)
  }
  assert.equal(refused(access.gate(request('GET', '/metrics', basic('x', READ)))), 'ok')
  const pushOnly = new AccessControl(true, [{ name: 'pusher', secret: CI, scopes: ['push'] }])
  assert.equal(refused(pushOnly.gate(request('GET', '/nix-cache-info', `Bearer ${CI}`))), '403 token pusher lacks the read scope')
  assert.equal(refused(pushOnly.gate(request('PUT', '/x.narinfo', `Bearer ${CI}`))), 'ok')
})

test('public reading lets every request through the gate; a push still needs a push token', () => {
  const access = control(false)
  assert.ok(access.gate(request('GET', '/nix-cache-info')).ok)
  const push = (auth?: string) => {
    const r = access.authorizePush(request('PUT', '/x.narinfo', auth))
    return r.ok ? r.token.name : r.refusal.status
  }
  assert.equal(push(), 401)
  assert.equal(push(`Bearer ${READ}`), 403)
  assert.equal(push(basic('ci', CI)), 'ci')
})

test('reload picks up a rotated secret; a token shorter than 16 characters is refused', async () => {
  const access = control()
  await writeFile(readFile, 'rotated-token-000000000000')
  access.reload()
  assert.equal(access.identify(`Bearer ${READ}`), undefined)
  assert.equal(access.identify('Bearer rotated-token-000000000000')?.name, 'laptops')
  await writeFile(readFile, 'short')
  assert.throws(() => access.reload(), /access token laptops: a token must have at least 16 characters/)
  assert.equal(access.identify('Bearer rotated-token-000000000000')?.name, 'laptops', 'a failed reload dropped the tokens')
  await writeFile(readFile, READ)
})
