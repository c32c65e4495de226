import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdir, readFile, readlink, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { CLIENT_REFUSALS, clientCommand, clientNixDir, NixCommandError, NixEnv, nixSkipReason, type NixKey } from './nix.js'
import { startStaticServer } from './static-server.js'

const skip = nixSkipReason()

let nix: NixEnv
let paths: Record<string, string>
let up: NixKey
let other: NixKey

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  paths = await nix.buildClosure({ a: {}, b: { deps: ['a'] }, app: { deps: ['a', 'b'], bigBytes: 4096 } })
  up = await nix.genKey('up-1')
  other = await nix.genKey('other-1')
  await nix.sign(up.secretFile, [paths.app])
})

after(async () => {
  await nix?.cleanup()
})

test('buildClosure builds real paths with references, files and a symlink', { skip }, async () => {
  const { a, b, app } = paths as Record<'a' | 'b' | 'app', string>
  assert.match(app, /^\/nix\/store\/[0-9a-z]{32}-app$/)
  assert.deepEqual(new Set(await nix.closure(app)), new Set([a, b, app]))
  assert.deepEqual(await nix.closure(a), [a])
  assert.deepEqual(await readdir(app), ['bin', 'blob', 'deps', 'link', 'name', 'readme.txt'])
  assert.equal((await stat(join(app, 'bin', 'app'))).mode & 0o111, 0o111)
  assert.equal(await readlink(join(app, 'link')), 'name')
  assert.equal((await readFile(join(app, 'blob'))).length, 4096)
  assert.deepEqual((await readFile(join(app, 'deps'), 'utf8')).trim().split('\n'), [a, b])

  const again = await nix.buildClosure({ a: {} })
  assert.notEqual(again.a, a, 'a fresh salt gives fresh paths')
})

test('genKey, sign, pathInfo, dump and hashPath agree with each other', { skip }, async () => {
  assert.match(up.publicKey, /^up-1:[A-Za-z0-9+/]{43}=$/)
  assert.match(up.secretKey, /^up-1:[A-Za-z0-9+/]{86}==$/)
  const [info] = await nix.pathInfo([paths.app])
  assert.ok(info)
  assert.equal(info.signatures?.length, 1)
  assert.match(info.signatures?.[0] ?? '', /^up-1:/)

  const nar = await nix.dump(paths.app)
  assert.equal(nar.length, info.narSize)
  assert.equal(nar.subarray(8, 8 + 13).toString(), 'nix-archive-1')
  assert.equal(info.narHash, `sha256-${createHash('sha256').update(nar).digest('base64')}`)
  assert.match(await nix.hashPath(paths.app), /^sha256:[0-9a-z]{52}$/)
})

test('copyToCache writes xz, zstd and uncompressed caches that substitute with the right key', { skip }, async () => {
  const app = paths.app
  for (const [compression, ext] of [['xz', '.nar.xz'], ['zstd', '.nar.zst'], ['none', '.nar']] as const) {
    const url = await nix.copyToCache(nix.freshDir(`cache-${compression}`), [app], { compression })
    const dir = url.slice('file://'.length)
    const nars = await readdir(join(dir, 'nar'))
    assert.equal(nars.length, 3, compression)
    assert.ok(nars.every((n) => n.endsWith(ext)), `${compression}: ${nars.join(' ')}`)
    const narinfo = await readFile(join(dir, `${app.slice(11, 43)}.narinfo`), 'utf8')
    assert.match(narinfo, new RegExp(`^Compression: ${compression}$`, 'm'))
    assert.match(narinfo, /^Sig: up-1:/m)

    const { store } = await nix.substitute(url, [app], [up.publicKey])
    assert.deepEqual(new Set(await nix.closure(app, store)), new Set(await nix.closure(app)))
    await nix.verifyPath(store, app)
    assert.equal(await nix.hashPath(app, store), await nix.hashPath(app))
    assert.deepEqual(await nix.dump(app, store), await nix.dump(app))
  }
})

test('substitution fails without a trusted signature, with both methods', { skip }, async () => {
  const url = await nix.copyToCache(nix.freshDir('cache'), [paths.app])
  await assert.rejects(nix.substitute(url, [paths.app], [other.publicKey]), (err: unknown) => {
    assert.ok(err instanceof NixCommandError)
    assert.match(err.stderr, CLIENT_REFUSALS.untrustedCopy)
    return true
  })
  await assert.rejects(nix.substitute(url, [paths.app], [other.publicKey], { method: 'realise' }), CLIENT_REFUSALS.untrustedSubstitute)
})

test('copyToStore and sign --store re-sign a closure with another key', { skip }, async () => {
  const fresh = await nix.buildClosure({ lib: {}, tool: { deps: ['lib'] } })
  const store = nix.freshDir('chroot')
  await nix.copyToStore(store, [fresh.tool])
  await nix.sign(other.secretFile, [fresh.tool], store)
  const url = await nix.copyToCache(nix.freshDir('cache'), [fresh.tool], { store, compression: 'bzip2' })

  const { store: client } = await nix.substitute(url, [fresh.tool], [other.publicKey])
  await nix.verifyPath(client, fresh.tool)
  await assert.rejects(nix.substitute(url, [fresh.tool], [up.publicKey]), CLIENT_REFUSALS.untrustedCopy)
})

test('substitution over HTTP: realise succeeds, a flipped NAR byte is a hash mismatch', { skip }, async () => {
  const app = paths.app
  const cache = nix.freshDir('cache')
  await nix.copyToCache(cache, [app], { compression: 'none' })
  const server = await startStaticServer(cache)
  try {
    const { store } = await nix.substitute(server.url, [app], [up.publicKey], { method: 'realise' })
    await nix.verifyPath(store, app)
    assert.equal(server.count('/nar/', 'GET'), 3)

    // Alter file contents, not NAR structure, so only the NarHash check can catch it.
    const a = paths.a
    const narUrl = `/${/^URL: (.*)$/m.exec(await readFile(join(cache, `${a.slice(11, 43)}.narinfo`), 'utf8'))?.[1]}`
    const offset = (await nix.dump(a)).indexOf('hello from')
    server.fault = (req) => (req.url === narUrl ? { kind: 'flip', offset } : undefined)
    await assert.rejects(nix.substitute(server.url, [app], [up.publicKey]), CLIENT_REFUSALS.hashMismatch)
  } finally {
    await server.close()
  }
})

test('a client from NARTHEX_TEST_NIX is another Nix with a store of its own', { skip: skip ?? (clientNixDir === undefined ? 'the client is the machine\'s nix (NARTHEX_TEST_NIX unset)' : undefined) }, async () => {
  const host = (await nix.run('nix', ['--version'])).stdout.trim()
  const client = (await nix.run(clientCommand('nix'), ['--version'])).stdout.trim()
  assert.notEqual(client, host)
  // The machine's store database is never opened by the other version (it could migrate it).
  await assert.rejects(nix.run(clientCommand('nix'), ['path-info', paths.app]), /is not valid/)
})
