/**
 * Credentials for private upstreams: the netrc parser, and an Upstream against static servers
 * that demand Basic or Bearer auth — sent only to that origin, a rejection reported as a
 * configuration problem (never "absent"), and the secret in no message.
 */
import assert from 'node:assert/strict'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, describe, test } from 'node:test'
import { isNarthexError, NarthexError } from '../../src/errors.js'
import { generateSecretKey } from '../../src/protocol/index.js'
import { loadCredentials, netrcEntryFor, parseNetrc, Upstream, type UpstreamOptions } from '../../src/upstream/index.js'
import { addToCache, fakePath } from '../helpers/fake-cache.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

describe('netrc parser', () => {
  test('machine entries, default, account and macdef, over any white space', () => {
    const entries = parseNetrc(
      [
        '# company caches',
        'machine cache.example.org login alice password "p w\\"d"',
        'machine Other.Example.org',
        '  login bob',
        '  account ignored password s3cret',
        'macdef init',
        'cd /pub',
        'machine inside.macro password nope',
        '',
        'default login anon password guest',
      ].join('\n'),
    )
    assert.deepEqual(netrcEntryFor(entries, 'cache.example.org'), { machine: 'cache.example.org', login: 'alice', password: 'p w"d' })
    assert.deepEqual(netrcEntryFor(entries, 'OTHER.example.org'), { machine: 'other.example.org', login: 'bob', password: 's3cret' })
    assert.deepEqual(netrcEntryFor(entries, 'inside.macro'), { machine: undefined, login: 'anon', password: 'guest' }, 'a macdef body was parsed')
    assert.equal(netrcEntryFor(parseNetrc('machine a password b'), 'c'), undefined)
  })

  test('malformed files are errors naming the line, never the token', () => {
    const cases: Array<[string, RegExp]> = [
      ['machine a passwrd hunter2-secret', /line 1: unexpected token/],
      ['login x password y', /line 1: "login" outside a machine/],
      ['machine a\nlogin', /line 2: "login" needs a value/],
      ['machine a password "unterminated', /line 1: unterminated quoted token/],
    ]
    for (const [text, message] of cases) {
      assert.throws(() => parseNetrc(text, 'f'), (err: unknown) => {
        assert.ok(err instanceof NarthexError && err.code === 'CONFIG_INVALID')
        assert.match(err.message, message)
        assert.ok(!err.message.includes('hunter2'), 'the message quotes a token')
        return true
      })
    }
  })
})

describe('an upstream with credentials', () => {
  const key = generateSecretKey('private-1')
  const present = fakePath('private-1.0', 'secret contents\n', key)
  const PASSWORD = 'netrc-password-9f8e7d6c5b4a'
  const TOKEN = 'bearer-token-1a2b3c4d5e6f'
  let dir: string
  let basic: StaticServer
  let bearer: StaticServer
  let elsewhere: StaticServer
  const opened: Upstream[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'narthex-credentials-test-'))
    await addToCache(join(dir, 'cache'), present)
    basic = await startStaticServer(join(dir, 'cache'), { auth: { kind: 'basic', login: 'narthex', password: PASSWORD } })
    bearer = await startStaticServer(join(dir, 'cache'), { auth: { kind: 'bearer', token: TOKEN } })
    elsewhere = await startStaticServer(join(dir, 'cache'))
  })
  afterEach(async () => {
    for (const s of [basic, bearer, elsewhere]) {
      s.fault = undefined
      s.requests.length = 0
    }
    await Promise.all(opened.splice(0).map((u) => u.close()))
  })
  after(async () => {
    await Promise.all([basic, bearer, elsewhere].map((s) => s.close()))
    await rm(dir, { recursive: true, force: true })
  })

  async function file(name: string, text: string, mode = 0o600): Promise<string> {
    const f = join(dir, name)
    await writeFile(f, text)
    await chmod(f, mode)
    return f
  }

  function upstream(url: string, options: Partial<UpstreamOptions> = {}, rejected: string[] = []): Upstream {
    const u = new Upstream(
      { name: 'private', url, timeoutMs: 1000, retries: 0, maxConnections: 2, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 30_000, ...options },
      { onCredentialsRejected: (_name, status, message) => rejected.push(`${status} ${message}`) },
    )
    opened.push(u)
    return u
  }

  async function errorOf(p: Promise<unknown>): Promise<NarthexError> {
    try {
      await p
    } catch (err) {
      if (isNarthexError(err)) return err
      throw err
    }
    throw new Error('expected a NarthexError')
  }

  test('the netrc entry of the upstream host is sent as Basic auth; narinfo and NAR come through', async () => {
    const netrc = await file('netrc', `machine elsewhere.invalid login x password y\nmachine 127.0.0.1 login narthex password ${PASSWORD}\n`)
    const u = upstream(basic.url, { netrcFile: netrc })
    const found = await u.fetchNarInfo(present.hashPart)
    assert.equal(found.kind, 'present')
    const nar = await u.openNar(u.resolveUrl(found.kind === 'present' ? found.info.url : ''))
    nar.body.resume()
    assert.ok(basic.requests.every((r) => r.authorization === `Basic ${Buffer.from(`narthex:${PASSWORD}`).toString('base64')}`))
    assert.deepEqual(u.credentialWarnings, [])
  })

  test('a bearer token file is sent as Authorization: Bearer', async () => {
    const u = upstream(bearer.url, { bearerTokenFile: await file('token', `${TOKEN}\n`) })
    assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present')
    assert.equal(bearer.requests[0]?.authorization, `Bearer ${TOKEN}`)
  })

  test('a wrong credential is "credentials rejected", never absent, and the secret is in no message', async () => {
    const rejected: string[] = []
    const u = upstream(bearer.url, { bearerTokenFile: await file('wrong', 'wrong-token-000000000000') }, rejected)
    for (const attempt of [u.fetchNarInfo(present.hashPart), u.fetchNarInfo(present.hashPart), u.openNar(`${bearer.url}/nar/x.nar`), u.openLog('x.drv')]) {
      const err = await errorOf(attempt)
      assert.equal(err.code, 'UPSTREAM_UNAVAILABLE', `403 to credentials answered ${err.code}`)
      assert.match(err.message, /credentials rejected/)
      assert.equal(err.detail?.reason, 'UNAUTHORIZED')
      assert.ok(!err.message.includes('wrong-token'), 'the token is in the message')
    }
    assert.equal(u.health().credentialsRejected, true)
    assert.equal(u.isDown, false, 'a rejection marked the upstream down, hiding its reason')
    assert.equal(rejected.length, 1, `the owner was told ${rejected.length} times, not once: ${rejected.join('; ')}`)
  })

  test('a 401 without credentials says the upstream demands some; a 403 without credentials stays absent', async () => {
    const u = upstream(basic.url)
    const err = await errorOf(u.fetchNarInfo(present.hashPart))
    assert.equal(err.code, 'UPSTREAM_UNAVAILABLE')
    assert.match(err.message, /401.*demands credentials/)
    elsewhere.fault = () => ({ kind: 'status', status: 403 })
    assert.deepEqual(await upstream(elsewhere.url).fetchNarInfo(present.hashPart), { kind: 'absent' })
  })

  test('credentials never leave the upstream origin: a redirect elsewhere is not followed', async () => {
    const u = upstream(bearer.url, { bearerTokenFile: await file('token2', TOKEN) })
    bearer.fault = () => ({ kind: 'status', status: 302, headers: { location: `${elsewhere.url}/${present.hashPart}.narinfo` } })
    assert.equal((await errorOf(u.fetchNarInfo(present.hashPart))).code, 'UPSTREAM_UNAVAILABLE')
    assert.equal(elsewhere.requests.length, 0, 'narthex followed the redirect to another host')
    assert.throws(() => u.resolveUrl(`${elsewhere.url}/nar/x.nar`), /another host/)
  })

  test('reloadCredentials reads a rotated token; a broken file keeps the old one', async () => {
    const f = await file('rotating', 'old-token-0000000000000')
    const u = upstream(bearer.url, { bearerTokenFile: f })
    assert.equal((await errorOf(u.fetchNarInfo(present.hashPart))).code, 'UPSTREAM_UNAVAILABLE')
    await writeFile(f, TOKEN)
    u.reloadCredentials()
    assert.equal(u.health().credentialsRejected, false)
    assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present')
    await rm(f)
    assert.throws(() => u.reloadCredentials(), /cannot read/)
    assert.equal((await u.fetchNarInfo(present.hashPart)).kind, 'present', 'a failed reload dropped the working token')
  })

  test('a secret file readable by group or others is a warning; a missing one an error', async () => {
    const loose = await file('loose', TOKEN, 0o644)
    const { warnings } = loadCredentials('private', bearer.url, { bearerTokenFile: loose })
    assert.match(warnings.join('\n'), /readable by everyone \(mode 0644\); chmod 600/)
    assert.throws(() => loadCredentials('private', bearer.url, { netrcFile: join(dir, 'absent') }), /upstream private: cannot read .*ENOENT/)
    const none = await file('netrc-none', 'machine other password x\n')
    const missing = loadCredentials('private', bearer.url, { netrcFile: none })
    assert.equal(missing.authorization, undefined)
    assert.match(missing.warnings.join('\n'), /no password for 127\.0\.0\.1/)
  })
})
