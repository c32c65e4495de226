/**
 * What newer Nix asks of a binary cache beyond narinfos and NARs, with the real
 * client (Nix 2.8, and 2.26 with NARTHEX_TEST_NIX): content-addressed
 * derivations (`ca-derivations`) substituted through narthex by their
 * realisation (`realisations/<id>.doi`) and pushed to it; NAR listings
 * (`<hash>.ls`); build logs pushed with `nix store copy-log`.
 *
 * The content-addressed outputs are built by the client itself: Nix 2.26 in its
 * own root's store, Nix 2.8 in a chroot store under the test directory (in a
 * sandbox, as Nix builds into a chroot store), never in the machine's store,
 * whose database Nix 2.8 would migrate for ca-derivations under an exclusive lock.
 */
import assert from 'node:assert/strict'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { brotliCompressSync } from 'node:zlib'
import { after, before, describe, test } from 'node:test'
import {
  formatRealisation,
  parsePublicKey,
  parseRealisation,
  parseStorePath,
  parseSecretKey,
  signRealisation,
  validRealisationSignatures,
} from '../../src/protocol/index.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { clientCommand, clientNixDir, NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()
const TOKEN = 'push-token-modern-0123456789'
const CA = ['--option', 'experimental-features', 'nix-command ca-derivations']

/** A content-addressed derivation of its own (`salt`), with a file, an executable, a symlink, and a build log line. */
function caExpression(salt: string): string {
  return `derivation {
  name = "ca-out";
  salt = "${salt}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo building ${salt}; /bin/mkdir $out $out/bin; echo ${salt} > $out/f; printf '#!/bin/sh\\\\n' > $out/bin/run; /bin/chmod +x $out/bin/run; /bin/ln -s f $out/link" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
`
}

interface CaBuild {
  file: string
  drv: string
  out: string
  /** `--store DIR` when the client built into a chroot store. */
  store: string[]
  /** The installable of the output: `DRV^out` (Nix 2.13 and later); Nix 2.8 has no such syntax, so `-f FILE`. */
  output: string[]
}

describe('modern Nix: content-addressed outputs, listings, build logs', { skip }, () => {
  let nix: NixEnv
  let up: StaticServer
  let upDir: string
  let upKey: NixKey
  let corp: NixKey
  let stranger: NixKey
  let narthex: NarthexProcess
  let netrc: string
  let newSyntax = true
  let fromUpstream: CaBuild

  const nixCmd = (args: string[]) => nix.run(clientCommand('nix'), [...args, ...CA], { timeoutMs: 180_000 })

  /** The client builds a fresh content-addressed derivation, signing what it builds with `key`. */
  async function buildCa(key: NixKey): Promise<CaBuild> {
    const file = join(nix.dir, `ca-${Math.random().toString(36).slice(2)}.nix`)
    await writeFile(file, caExpression(Math.random().toString(36).slice(2)))
    // Nix 2.26 builds in its root's own store; Nix 2.8 in a chroot store, which it builds into only in a sandbox.
    const store =
      clientNixDir === undefined
        ? ['--store', resolve(nix.freshDir('ca-build')), '--option', 'sandbox', 'true', '--option', 'sandbox-paths', '/usr /bin /lib /lib64']
        : []
    const { stdout } = await nixCmd(['build', ...store, '-f', file, '--no-link', '--json', '--option', 'secret-key-files', key.secretFile])
    const [built] = JSON.parse(stdout) as Array<{ drvPath: string; outputs: { out: string } }>
    return { file, drv: built.drvPath, out: built.outputs.out, store, output: newSyntax ? [`${built.drvPath}^out`] : ['-f', file] }
  }

  /** A fresh client (empty chroot store) builds `file` with narthex as its only substituter, never building locally. */
  async function substituteCa(file: string): Promise<{ out: string; store: string }> {
    const store = resolve(nix.freshDir('fresh'))
    const { stdout } = await nixCmd([
      'build', '--store', store, '-f', file, '--no-link', '--json', '--max-jobs', '0',
      '--option', 'substituters', narthex.url, '--option', 'trusted-public-keys', narthex.publicKey,
    ])
    const [built] = JSON.parse(stdout) as Array<{ outputs: { out: string } }>
    assert.equal(await readFile(join(store, built.outputs.out, 'f'), 'utf8').then((t) => t.length > 0), true)
    return { out: built.outputs.out, store }
  }

  before(async () => {
    nix = await NixEnv.create()
    const { stdout } = await nix.run(clientCommand('nix'), ['--version'])
    const minor = Number(/\d+\.(\d+)/.exec(stdout)?.[1])
    newSyntax = minor >= 13
    upKey = await nix.genKey('up-1')
    corp = await nix.genKey('corp-1')
    stranger = await nix.genKey('stranger-1')
    upDir = nix.freshDir('up')
    fromUpstream = await buildCa(upKey)
    await nixCmd(['copy', ...fromUpstream.store, '--to', `file://${upDir}?write-nar-listing=true`, ...fromUpstream.output])
    up = await startStaticServer(upDir)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: up.url, publicKeys: [upKey.publicKey], retries: 0 }],
      push: { tokens: [TOKEN], publicKeys: [corp.publicKey], minSignatures: 1 },
    })
    netrc = join(nix.dir, 'netrc')
    await writeFile(netrc, `machine 127.0.0.1 login ci password ${TOKEN}\n`)
  })

  after(async () => {
    await narthex?.cleanup()
    await up?.close()
    await nix?.cleanup()
  })

  test('nix build of a content-addressed derivation substitutes through narthex, re-signed by narthex', async () => {
    const [doi] = await readdir(join(upDir, 'realisations'))
    assert.ok(doi, 'the client wrote no realisation into the upstream cache')
    const { out } = await substituteCa(fromUpstream.file)
    assert.equal(out, fromUpstream.out)
    assert.equal(up.count('/realisations/'), 1)
    const served = parseRealisation(await (await fetch(`${narthex.url}/realisations/${doi}`)).text())
    assert.equal(`/nix/store/${served.outPath.hashPart}-${served.outPath.name}`, fromUpstream.out)
    assert.equal(validRealisationSignatures(served, [parsePublicKey(narthex.publicKey)]).length, 1)
    assert.equal(validRealisationSignatures(served, [parsePublicKey(upKey.publicKey)]).length, 1)
  })

  test('a realisation without a trusted signature is not served, and the client does not build', async () => {
    // A derivation of its own, whose realisation a stranger signs, pointing at a path narthex trusts.
    const other = await buildCa(stranger)
    const dir = nix.freshDir('stranger-cache')
    await nixCmd(['copy', ...other.store, '--to', `file://${dir}`, ...other.output])
    const [doi] = await readdir(join(dir, 'realisations'))
    const real = parseRealisation(await readFile(join(dir, 'realisations', doi), 'utf8'))
    const lie = signRealisation({ ...real, outPath: parseStorePath(fromUpstream.out), signatures: [] }, parseSecretKey(stranger.secretKey))
    await writeFile(join(upDir, 'realisations', doi), formatRealisation(lie))
    assert.equal((await fetch(`${narthex.url}/realisations/${doi}`)).status, 404)
    await assert.rejects(substituteCa(other.file), NixCommandError)
    const audit = await runCli(['audit', '--config', narthex.configFile, '--json'])
    const refused = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { decision: string; reason?: string; message?: string })
    assert.ok(refused.some((e) => e.decision === 'refuse' && e.reason === 'INSUFFICIENT_SIGNATURES' && e.message?.startsWith(doi.replace(/\.doi$/, ''))))
  })

  test('GET /<hash>.ls is the listing Nix writes, made by narthex from the NAR it verified', async () => {
    const hash = hashPartOf(fromUpstream.out)
    const res = await fetch(`${narthex.url}/${hash}.ls`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'application/json')
    const ours = await res.text()
    const theirs = await readFile(join(upDir, `${hash}.ls`), 'utf8')
    // Nix 2.26 writes keys in byte order, as narthex does; Nix 2.8 in its own order.
    if (newSyntax) assert.equal(ours, theirs)
    else assert.deepEqual(JSON.parse(ours), JSON.parse(theirs))
    assert.equal(up.count(`/${hash}.ls`), 0, 'narthex fetched the upstream listing')
    assert.equal((await fetch(`${narthex.url}/${'0'.repeat(32)}.ls`)).status, 404)
  })

  test('nix copy --to narthex of a content-addressed output (with write-nar-listing) and its build log; a fresh client substitutes it', async () => {
    const pushed = await buildCa(corp)
    const opts = ['--option', 'netrc-file', netrc]
    await nixCmd(['copy', ...pushed.store, '--to', `${narthex.url}?write-nar-listing=true`, ...pushed.output, ...opts])
    await nixCmd(['store', 'copy-log', ...pushed.store, '--to', narthex.url, pushed.drv, ...opts])
    const fresh = await substituteCa(pushed.file)
    assert.equal(fresh.out, pushed.out)
    const listing = JSON.parse(await (await fetch(`${narthex.url}/${hashPartOf(pushed.out)}.ls`)).text()) as { root: { entries: Record<string, unknown> } }
    assert.deepEqual(Object.keys(listing.root.entries), ['bin', 'f', 'link'])
    // The fresh store holds the derivation but no log: `nix log` finds it on the substituter.
    const { stdout } = await nixCmd(['log', '--store', fresh.store, '--option', 'substituters', narthex.url, pushed.drv])
    assert.match(stdout, /building /)
    // Unauthenticated, none of it is accepted.
    const drvName = pushed.drv.slice('/nix/store/'.length)
    assert.equal((await fetch(`${narthex.url}/log/${drvName}`, { method: 'PUT', body: 'forged log' })).status, 401)
  })

  test('a build log pushed with a Content-Encoding is kept so and served with it; an unknown encoding is refused', async () => {
    const drvName = `${'1'.repeat(32)}-encoded.drv`
    const text = 'a log line\n'.repeat(1000)
    const put = (body: Buffer, encoding: string) =>
      fetch(`${narthex.url}/log/${drvName}`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-encoding': encoding }, body })
    assert.equal((await put(Buffer.from(text), 'compress')).status, 400)
    assert.equal((await put(brotliCompressSync(text), 'br')).status, 201)
    const res = await fetch(`${narthex.url}/log/${drvName}`)
    assert.equal(res.headers.get('content-encoding'), 'br')
    assert.equal(await res.text(), text)
  })

  test('a pushed realisation needs a push key, a path narthex holds, and no earlier other answer', async () => {
    const id = `sha256:${'e'.repeat(64)}!out`
    const known = parseStorePath(fromUpstream.out)
    const unknown = { hashPart: '0'.repeat(32), name: 'ca-out' }
    const put = (outPath: typeof known, key: NixKey) =>
      fetch(`${narthex.url}/realisations/${id}.doi`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: formatRealisation(signRealisation({ id, outPath, signatures: [], dependentRealisations: {} }, parseSecretKey(key.secretKey))),
      })
    assert.equal((await put(known, stranger)).status, 403)
    assert.equal((await put(unknown, corp)).status, 400)
    assert.equal((await fetch(`${narthex.url}/realisations/${id}.doi`)).status, 404)
    assert.equal((await put(known, corp)).status, 201)
    assert.equal((await put(known, corp)).status, 200)
    assert.equal((await put(unknown, corp)).status, 409)
    const served = parseRealisation(await (await fetch(`${narthex.url}/realisations/${id}.doi`)).text())
    assert.deepEqual(served.outPath, known)
  })
})
