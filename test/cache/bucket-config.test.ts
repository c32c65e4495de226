/** `storage.s3` in the configuration: what it accepts, how it normalises, what it refuses. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildConfig } from '../../src/config/index.js'

test('without storage.s3 the configuration has no bucket', () => {
  assert.equal(buildConfig({ storage: { maxSize: '1GiB' } }, '/srv').storage.s3, undefined)
})

test('storage.s3 normalises the prefix and defaults path-style requests to having an endpoint', () => {
  const withEndpoint = buildConfig({ storage: { s3: { bucket: 'nix-cache', prefix: '/narthex/', endpoint: 'http://127.0.0.1:9000/' } } }, '/srv').storage.s3
  assert.deepEqual(withEndpoint, { bucket: 'nix-cache', prefix: 'narthex/', endpoint: 'http://127.0.0.1:9000', forcePathStyle: true })
  const aws = buildConfig({ storage: { s3: { bucket: 'nix-cache', region: 'eu-west-1', profile: 'narthex' } } }, '/srv').storage.s3
  assert.deepEqual(aws, { bucket: 'nix-cache', prefix: '', region: 'eu-west-1', profile: 'narthex', forcePathStyle: false })
})

test('storage.s3 refuses credentials, bad bucket names, prefixes with dot segments and blanks in the endpoint, naming the field', () => {
  const refused = (s3: unknown, field: RegExp) => assert.throws(() => buildConfig({ storage: { s3 } }, '/srv'), (err: Error) => field.test(err.message))
  refused({ bucket: 'nix-cache', secretAccessKey: 'x' }, /storage\.s3\.secretAccessKey: unknown key/)
  refused({ bucket: 'Nix_Cache' }, /storage\.s3\.bucket: expected an S3 bucket name/)
  refused({ bucket: 'nix-cache', prefix: 'a/../b' }, /storage\.s3\.prefix: .*"\.\."/)
  refused({ bucket: 'nix-cache', endpoint: 'ftp://x' }, /storage\.s3\.endpoint/)
  refused({ bucket: 'nix-cache', endpoint: 'http://key:secret@127.0.0.1:9000' }, /storage\.s3\.endpoint: an endpoint carries no credentials/)
  // A no-break space that a trimming URL check would let through, and the AWS client would then refuse at start.
  refused({ bucket: 'nix-cache', endpoint: '\u00a0http://127.0.0.1:9000' }, /storage\.s3\.endpoint: a URL has no spaces/)
  refused({}, /storage\.s3\.bucket/)
})
