/**
 * An s3:// upstream without a server: which NAR URLs a narinfo may name (the
 * bucket is compared by name, URL origins being "null" for s3://), how SDK
 * errors become the statuses the upstream judges, and what the config accepts.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildConfig } from '../../src/config/index.js'
import { isNarthexError } from '../../src/errors.js'
import { s3ErrorStatus, Upstream, upstreamLocation } from '../../src/upstream/index.js'

const settings = { timeoutMs: 1000, retries: 0, maxConnections: 2, minBytesPerSecond: 0, failureThreshold: 3, downForMs: 1000 }
const s3 = (url: string) => new Upstream({ name: 'bucket', url, ...settings })

test('relative NAR URLs resolve under the bucket and its prefix', async () => {
  const plain = s3('s3://nix-cache?region=eu-west-1&endpoint=127.0.0.1:9000&scheme=http')
  const prefixed = s3('s3://nix-cache/team/cache?endpoint=http://127.0.0.1:9000')
  try {
    assert.equal(plain.resolveUrl('nar/abc.nar.xz'), 's3://nix-cache/nar/abc.nar.xz')
    assert.equal(prefixed.resolveUrl('nar/abc.nar.xz'), 's3://nix-cache/team/cache/nar/abc.nar.xz')
    assert.equal(prefixed.resolveUrl('s3://nix-cache/elsewhere/nar/abc.nar.xz'), 's3://nix-cache/elsewhere/nar/abc.nar.xz', 'an absolute URL in the same bucket is refused')
    assert.equal(prefixed.resolveUrl('/nar/a%20b.nar'), 's3://nix-cache/nar/a%20b.nar')
  } finally {
    await Promise.all([plain.close(), prefixed.close()])
  }
})

test('a hostile narinfo cannot send narthex to another bucket, host or scheme', async () => {
  const u = s3('s3://nix-cache?endpoint=http://127.0.0.1:9000')
  try {
    for (const url of ['s3://other-bucket/nar/x.nar', '//other-bucket/nar/x.nar', 'https://evil.example/nar/x.nar', 'http://127.0.0.1:9000/nix-cache/nar/x.nar', 's3://nix-cache:9000/nar/x.nar', 's3://user:pw@nix-cache/nar/x.nar', 'file:///etc/passwd']) {
      assert.throws(() => u.resolveUrl(url), (err) => isNarthexError(err, 'UPSTREAM_INVALID'), `${url} was accepted`)
    }
    for (const url of ['', 's3://nix-cache/', 'nar/', '/nar/%zz']) {
      assert.throws(() => u.resolveUrl(url), (err) => isNarthexError(err, 'UPSTREAM_INVALID'), `${JSON.stringify(url)} was accepted as an object`)
    }
    await assert.rejects(u.openNar('s3://other-bucket/nar/x.nar'), (err) => isNarthexError(err, 'UPSTREAM_INVALID'), 'openNar followed a URL into another bucket')
  } finally {
    await u.close()
  }
})

test('SDK errors map to the statuses retries, health and credential handling already judge', () => {
  const sdkError = (name: string, httpStatusCode?: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode } })
  const cases: Array<[unknown, number | undefined]> = [
    [sdkError('NoSuchKey', 404), 404],
    [sdkError('NotFound', 404), 404],
    [sdkError('AccessDenied', 403), 403],
    [sdkError('InvalidAccessKeyId', 403), 403],
    [sdkError('SignatureDoesNotMatch', 403), 403],
    [sdkError('Forbidden', 403), 403],
    [sdkError('SlowDown', 503), 503],
    [sdkError('ThrottlingException', 400), 503],
    [sdkError('InternalError', 500), 500],
    [sdkError('ServiceUnavailable', 503), 503],
    [sdkError('NoSuchBucket', 404), 502],
    [Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 401],
    [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED', $metadata: {} }), undefined],
    [Object.assign(new Error('timed out'), { name: 'TimeoutError' }), undefined],
    [Object.assign(new Error('aborted'), { name: 'AbortError' }), undefined],
  ]
  for (const [err, status] of cases) assert.equal(s3ErrorStatus(err)?.status, status, (err as Error).name)
})

test('config: s3:// upstreams are accepted; malformed ones, netrc or bearer files, and credentials in the endpoint are errors', () => {
  const upstream = (url: string, extra: Record<string, unknown> = {}) => ({ upstreams: [{ name: 'b', url, ...extra }] })
  assert.equal(buildConfig(upstream('s3://nix-cache?region=us-east-1&endpoint=127.0.0.1:9000&scheme=http&profile=ci'), '/srv').upstreams[0].url, 's3://nix-cache?region=us-east-1&endpoint=127.0.0.1:9000&scheme=http&profile=ci')
  const refused: Array<[string, Record<string, unknown>, RegExp]> = [
    ['s3://No_Such', {}, /upstreams\.0\.url: invalid s3:\/\/ URL: .*not a valid bucket name/],
    ['s3://nix-cache?colour=red', {}, /upstreams\.0\.url: invalid s3:\/\/ URL: unknown s3:\/\/ URL parameter "colour"/],
    ['s3://key:secret@nix-cache', {}, /upstreams\.0\.url: invalid s3:\/\/ URL: an s3:\/\/ URL carries no credentials/],
    ['s3://nix-cache?endpoint=http://key:secret@127.0.0.1:9000', {}, /upstreams\.0\.url: an s3:\/\/ endpoint carries no credentials/],
    ['s3://nix-cache', { netrcFile: '/etc/netrc' }, /upstreams\.0\.netrcFile: .*credentials come from the AWS chain/],
    ['s3://nix-cache', { bearerTokenFile: '/etc/token' }, /upstreams\.0\.bearerTokenFile: .*credentials come from the AWS chain/],
    ['gopher://nix-cache', {}, /upstreams\.0\.url: expected an http:\/\/, https:\/\/ or s3:\/\/ URL/],
  ]
  for (const [url, extra, message] of refused) assert.throws(() => buildConfig(upstream(url, extra), '/srv'), message, url)
})

test('an s3:// upstream shows its normal form, with no secret, on the status page and in explain', async () => {
  const u = s3('s3://nix-cache/team?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1')
  try {
    assert.equal(u.health().url, 's3://nix-cache/team/?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000')
    assert.equal(upstreamLocation('s3://nix-cache/team?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1'), u.health().url)
    assert.equal(upstreamLocation('https://cache.example.org'), 'https://cache.example.org')
  } finally {
    await u.close()
  }
})

test('netrc or bearer credentials given to an s3:// Upstream directly are refused too', () => {
  assert.throws(() => new Upstream({ name: 'b', url: 's3://nix-cache', netrcFile: '/etc/netrc', ...settings }), (err) => isNarthexError(err, 'CONFIG_INVALID'))
})
