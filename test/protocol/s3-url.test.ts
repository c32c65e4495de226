import assert from 'node:assert/strict'
import { test } from 'node:test'
import { formatS3Location, parseS3Url } from '../../src/protocol/index.js'

test('an s3:// URL as nix copy takes it: bucket, region, endpoint with scheme, path-style', () => {
  const loc = parseS3Url('s3://corp-nix?region=eu-west-1&endpoint=minio.example:9000&scheme=http&profile=cache')
  assert.deepEqual(loc, {
    bucket: 'corp-nix',
    prefix: '',
    endpoint: 'http://minio.example:9000',
    region: 'eu-west-1',
    profile: 'cache',
    forcePathStyle: true,
  })
  assert.equal(parseS3Url('s3://corp-nix?endpoint=https://s3.example/').endpoint, 'https://s3.example')
  assert.equal(parseS3Url('s3://corp-nix').forcePathStyle, false, 'AWS itself: virtual-hosted style')
  assert.equal(parseS3Url('s3://corp-nix?multipart-upload=true').bucket, 'corp-nix', "a writer's parameter is ignored")
})

test('a path after the bucket is a key prefix', () => {
  assert.equal(parseS3Url('s3://corp-nix/caches/main/').prefix, 'caches/main/')
  assert.equal(parseS3Url('s3://corp-nix/caches').prefix, 'caches/')
  assert.equal(formatS3Location(parseS3Url('s3://corp-nix/c?endpoint=http://127.0.0.1:8080')), 's3://corp-nix/c/?endpoint=http%3A%2F%2F127.0.0.1%3A8080')
})

test('bad s3:// URLs are refused with the reason', () => {
  assert.throws(() => parseS3Url('https://corp-nix'), /not an s3:\/\/ URL/)
  assert.throws(() => parseS3Url('s3://Corp_Nix'), /not a valid bucket name/)
  assert.throws(() => parseS3Url('s3://key:secret@corp-nix'), /carries no credentials/)
  assert.throws(() => parseS3Url('s3://corp-nix?regoin=x'), /unknown s3:\/\/ URL parameter "regoin"/)
  assert.throws(() => parseS3Url('s3://corp-nix?scheme=ftp'), /http or https/)
  assert.throws(() => parseS3Url('s3://corp-nix/a/../b'), /"\.\."/)
})

test("the AWS SDK's Node.js notice goes to the log, not as plain text on stderr", async () => {
  const { loadS3Sdk, s3SdkNodeNotice } = await import('../../src/s3-client.js')
  assert.match(s3SdkNodeNotice('v20.20.2') ?? '', /Node\.js v20\.20\.2; AWS SDK releases after January 2027 need Node\.js 22/)
  assert.equal(s3SdkNodeNotice('v22.1.0'), undefined)
  await loadS3Sdk()
  assert.equal(process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED, 'true')
})
