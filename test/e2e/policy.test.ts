/**
 * The trust policy against hostile upstreams, with the real `nix` client:
 * shadowing, quorum, unsigned paths, conflicts (priority, recorded in the audit
 * log and /metrics; `onConflict: refuse`; an unmet quorum), `deny.paths`, the
 * audit log, `explain` and `explain --closure`.
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { formatNixHash, parseNarInfo } from '../../src/protocol/index.js'
import { copyCacheEntries, forgeNar, hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

/** An audit entry as `narthex audit --json` prints it. */
interface AuditLine {
  decision: string
  storePath: string
  reason?: string
  narHash?: string
  narHashes?: string[]
  upstreams?: string[]
  conflicts?: Array<{ upstream: string; narHash: string; signers: string[] }>
}


describe('trust policy with hostile upstreams', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>
  let primaryKey: NixKey
  let thirdKey: NixKey
  let primary: StaticServer
  let third: StaticServer
  let narthex: NarthexProcess
  let primaryDir: string
  let thirdDir: string
  let failPrimaryFor: string | undefined

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({
      libx: {},
      'shadow-w': {},
      hello: {},
      'quorum-a': {},
      'quorum-b': {},
      'unsigned-u': {},
      'plain-v': {},
      'strict-s': {},
      'denied-d': {},
      'quorum-c': {},
      'closure-top': { deps: ['libx', 'quorum-b'] },
    })
    primaryKey = await nix.genKey('primary-1')
    thirdKey = await nix.genKey('third-1')
    const signedByPrimary = [
      paths.libx,
      paths['shadow-w'],
      paths['quorum-a'],
      paths['quorum-b'],
      paths['quorum-c'],
      paths['strict-s'],
      paths['denied-d'],
      paths['closure-top'],
    ]
    await nix.sign(primaryKey.secretFile, signedByPrimary)
    primaryDir = nix.freshDir('primary')
    await nix.copyToCache(primaryDir, [...signedByPrimary, paths['unsigned-u'], paths['plain-v']])

    // The third-party cache: a legitimately signed path of its own, quorum-a with a second
    // signature, and other builds of libx, shadow-w and strict-s signed with its own (trusted) key.
    const thirdStore = nix.freshDir('third-store')
    await nix.copyToStore(thirdStore, [paths['quorum-a'], paths.hello])
    await nix.sign(thirdKey.secretFile, [paths['quorum-a'], paths.hello], thirdStore)
    thirdDir = nix.freshDir('third')
    await nix.copyToCache(thirdDir, [paths['quorum-a'], paths.hello], { store: thirdStore })
    await copyCacheEntries(primaryDir, thirdDir, [paths.libx, paths['shadow-w'], paths['strict-s'], paths['quorum-c']])
    await forgeNar(thirdDir, paths.libx, 'libx', 'evil', thirdKey.secretKey)
    await forgeNar(thirdDir, paths['shadow-w'], 'shadow-w', 'shadow-X', thirdKey.secretKey)
    await forgeNar(thirdDir, paths['strict-s'], 'strict-s', 'strict-X', thirdKey.secretKey)
    await forgeNar(thirdDir, paths['quorum-c'], 'quorum-c', 'quorum-X', thirdKey.secretKey)

    primary = await startStaticServer(primaryDir)
    primary.fault = (req) => (failPrimaryFor && req.url?.startsWith(`/${failPrimaryFor}`) ? { kind: 'status', status: 500 } : undefined)
    third = await startStaticServer(thirdDir)
    const upstream = (name: string, server: StaticServer, key: NixKey) => ({ name, url: server.url, publicKeys: [key.publicKey], timeoutMs: 2000, retries: 0 })
    narthex = await NarthexProcess.start({
      upstreams: [upstream('primary', primary, primaryKey), upstream('third', third, thirdKey)],
      rules: [
        { match: 'lib*', upstreams: ['primary'], minSignatures: 1 },
        { match: 'quorum-*', upstreams: ['primary', 'third'], minSignatures: 2 },
        { match: 'unsigned-*', upstreams: ['primary'], minSignatures: 0 },
        { match: 'strict-*', upstreams: ['primary', 'third'], onConflict: 'refuse' },
        { match: '*', upstreams: ['primary', 'third'], minSignatures: 1 },
      ],
      deny: { paths: [paths['denied-d']] },
      cache: { negativeTtlMs: 0, unavailableTtlMs: 0 },
      prefetch: { references: false },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await primary?.close()
    await third?.close()
    await nix?.cleanup()
  })

  const narinfoStatus = async (p: string) => (await fetch(`${narthex.url}/${hashPartOf(p)}.narinfo`)).status
  const auditOf = async (pathPart: string) => {
    const audit = await runCli(['audit', '--config', narthex.configFile, '--json', '--path', pathPart])
    assert.equal(audit.code, 0, audit.stderr)
    return audit.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine)
  }
  const narHashIn = async (dir: string, p: string) => formatNixHash((await readCacheNarInfo(dir, p)).narHash)

  test('a path routed to the primary is never taken from a third party, even one signed by a trusted key', async () => {
    const { store } = await nix.substitute(narthex.url, [paths.libx], [narthex.publicKey])
    await nix.verifyPath(store, paths.libx)
    assert.equal(await nix.hashPath(paths.libx, store), await nix.hashPath(paths.libx))
    // The name is known only from the answers, so the third party is asked too; its
    // (validly signed) forgery is ignored because the rule does not allow it for lib*.
    const served = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths.libx)}.narinfo`)).text())
    assert.deepEqual(served.narHash, (await readCacheNarInfo(primaryDir, paths.libx)).narHash)
    assert.equal(third.count('/nar/'), 0)
  })

  test('shadowing: while the primary cannot be asked, the forged lower-priority copy is not used (503)', async () => {
    failPrimaryFor = hashPartOf(paths['shadow-w'])
    const res = await fetch(`${narthex.url}/${hashPartOf(paths['shadow-w'])}.narinfo`)
    assert.equal(res.status, 503)
    assert.ok(res.headers.get('retry-after'))
    assert.equal(third.count(`/${hashPartOf(paths['shadow-w'])}.narinfo`), 1, 'the third party was asked…')
    assert.equal(third.count('/nar/'), 0, '…but nothing of it was used')
    failPrimaryFor = undefined
  })

  test('two signed answers that disagree: the higher-priority upstream supplies the path', async () => {
    assert.equal(await narinfoStatus(paths['shadow-w']), 200)
    const served = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths['shadow-w'])}.narinfo`)).text())
    assert.deepEqual(served.narHash, (await readCacheNarInfo(primaryDir, paths['shadow-w'])).narHash)
    const { store } = await nix.substitute(narthex.url, [paths['shadow-w']], [narthex.publicKey])
    await nix.verifyPath(store, paths['shadow-w'])
    assert.equal(await nix.hashPath(paths['shadow-w'], store), await nix.hashPath(paths['shadow-w']))
    assert.equal(third.count('/nar/'), 0, 'nothing of the third party was used')

    // The disagreement is recorded: audit log (both answers), /metrics, a warning, and explain --fetch.
    const primaryHash = await narHashIn(primaryDir, paths['shadow-w'])
    const thirdHash = await narHashIn(thirdDir, paths['shadow-w'])
    assert.notEqual(primaryHash, thirdHash)
    const conflicts = (await auditOf('shadow-w')).filter((e) => e.decision === 'conflict')
    assert.equal(conflicts.length, 1, 'one admission, one conflict entry')
    assert.equal(conflicts[0].narHash, primaryHash)
    assert.deepEqual(conflicts[0].upstreams, ['primary', 'third'])
    assert.deepEqual(conflicts[0].narHashes, [primaryHash, thirdHash])
    assert.deepEqual(conflicts[0].conflicts, [{ upstream: 'third', narHash: thirdHash, signers: ['third-1'] }])
    const metrics = await (await fetch(`${narthex.url}/metrics`)).text()
    assert.match(metrics, /narthex_conflicts_total\{rule="4",upstream="third"\} 1\b/)
    assert.ok((await narthex.waitForLog('upstreams disagree')).some((l) => l.level === 40 && l.path === paths['shadow-w']))
    const explained = await runCli(['explain', paths['shadow-w'], '--fetch', '--config', narthex.configFile])
    assert.equal(explained.code, 0, explained.stderr)
    assert.match(explained.stdout, new RegExp(`admitted: +${primaryHash} from primary`))
    assert.match(explained.stdout, new RegExp(`conflict: +third offers ${thirdHash} \\(signed by third-1\\)`))
  })

  test('under onConflict: refuse, two signed answers that disagree are refused and audited', async () => {
    assert.equal(await narinfoStatus(paths['strict-s']), 404)
    await assert.rejects(nix.substitute(narthex.url, [paths['strict-s']], [narthex.publicKey]), NixCommandError)
    const entries = await auditOf('strict-s')
    const refusal = entries.find((e) => e.decision === 'refuse' && e.reason === 'CONFLICT' && e.storePath === paths['strict-s'])
    assert.ok(refusal, JSON.stringify(entries))
    assert.deepEqual(refusal.narHashes, [await narHashIn(primaryDir, paths['strict-s']), await narHashIn(thirdDir, paths['strict-s'])])
    assert.deepEqual(refusal.upstreams, ['primary', 'third'])
    const metrics = await (await fetch(`${narthex.url}/metrics`)).text()
    assert.match(metrics, /narthex_refusals_total\{reason="CONFLICT"\} [1-9]/)
  })

  test('a 2-of-2 quorum whose two caches sign different copies is refused (CONFLICT) and audited with both', async () => {
    assert.equal(await narinfoStatus(paths['quorum-c']), 404)
    await assert.rejects(nix.substitute(narthex.url, [paths['quorum-c']], [narthex.publicKey]), NixCommandError)
    const refusal = (await auditOf('quorum-c')).find((e) => e.decision === 'refuse')
    assert.equal(refusal?.reason, 'CONFLICT')
    assert.deepEqual(refusal.narHashes, [await narHashIn(primaryDir, paths['quorum-c']), await narHashIn(thirdDir, paths['quorum-c'])])
    assert.deepEqual(refusal.upstreams, ['primary', 'third'])
    assert.deepEqual(refusal.conflicts?.map((c) => c.signers), [['primary-1'], ['third-1']])
  })

  test('a path on deny.paths is refused (DENIED) though its rule would admit it', async () => {
    assert.equal(await narinfoStatus(paths['denied-d']), 404)
    await assert.rejects(nix.substitute(narthex.url, [paths['denied-d']], [narthex.publicKey]), NixCommandError)
    const audit = await runCli(['audit', '--config', narthex.configFile, '--json', '--path', 'denied-d'])
    const entries = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { decision: string; reason?: string })
    assert.ok(entries.some((e) => e.decision === 'refuse' && e.reason === 'DENIED'))
    const explained = await runCli(['explain', paths['denied-d'], '--config', narthex.configFile])
    assert.match(explained.stdout, /denied: .*deny\.paths/)
  })

  test('a path only the third party has, signed by its key, is admitted', async () => {
    const { store } = await nix.substitute(narthex.url, [paths.hello], [narthex.publicKey])
    await nix.verifyPath(store, paths.hello)
  })

  test('quorum: signed by both required keys is admitted; by only one is refused', async () => {
    const info = parseNarInfo(await (await fetch(`${narthex.url}/${hashPartOf(paths['quorum-a'])}.narinfo`)).text())
    assert.deepEqual(info.sigs.map((s) => s.split(':')[0]).sort(), ['narthex-1', 'primary-1', 'third-1'])
    const { store } = await nix.substitute(narthex.url, [paths['quorum-a']], [narthex.publicKey])
    await nix.verifyPath(store, paths['quorum-a'])
    assert.equal(await narinfoStatus(paths['quorum-b']), 404)
    await assert.rejects(nix.substitute(narthex.url, [paths['quorum-b']], [narthex.publicKey]), NixCommandError)
  })

  test('an unsigned path is refused unless its rule says minSignatures: 0', async () => {
    assert.equal(await narinfoStatus(paths['plain-v']), 404)
    const { store } = await nix.substitute(narthex.url, [paths['unsigned-u']], [narthex.publicKey])
    await nix.verifyPath(store, paths['unsigned-u'])
  })

  test('the audit log records admissions and refusals, verifies, and a hand edit is detected', async () => {
    const text = await runCli(['audit', '--config', narthex.configFile])
    assert.equal(text.code, 0)
    assert.match(text.stdout, new RegExp(`admit\\s+${paths.libx}.*from primary.*signed by primary-1`))
    assert.match(text.stdout, new RegExp(`refuse\\s+${paths['quorum-b']}.*INSUFFICIENT_SIGNATURES`))
    assert.match(text.stdout, new RegExp(`refuse\\s+${paths['plain-v']}.*INSUFFICIENT_SIGNATURES`))
    const ok = await runCli(['audit', '--verify', '--config', narthex.configFile])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
    assert.match(ok.stdout, /chain intact/)

    const logFile = join(narthex.dataDir, 'audit.log')
    const original = await readFile(logFile, 'utf8')
    const lines = original.trim().split('\n')
    const libxLine = lines.findIndex((l) => l.includes(paths.libx))
    lines[libxLine] = lines[libxLine].replace('"admit"', '"refuse"')
    await writeFile(logFile, `${lines.join('\n')}\n`)
    const broken = await runCli(['audit', '--verify', '--config', narthex.configFile])
    assert.equal(broken.code, 1)
    assert.match(broken.stdout, new RegExp(`BROKEN at line ${libxLine + 1}`))
    await writeFile(logFile, original)
  })

  test('explain shows the rule, and with --fetch what each upstream says and the decision', async () => {
    const plain = await runCli(['explain', paths['quorum-b'], '--config', narthex.configFile])
    assert.equal(plain.code, 0, plain.stderr)
    assert.match(plain.stdout, /rules\[1\] \(match "quorum-\*"\)/)
    assert.match(plain.stdout, /1\. primary\s+2\. third/)
    assert.match(plain.stdout, /at least 2 distinct trusted key/)
    const fetched = await runCli(['explain', paths['quorum-b'], '--fetch', '--json', '--config', narthex.configFile])
    assert.equal(fetched.code, 0, fetched.stderr)
    const report = JSON.parse(fetched.stdout) as { answers: Array<{ upstream: string; answer: string; validTrustedSigners?: string[] }>; decision: { decision: string; reason?: string } }
    assert.deepEqual(report.answers.find((a) => a.upstream === 'primary')?.validTrustedSigners, ['primary-1'])
    assert.equal(report.answers.find((a) => a.upstream === 'third')?.answer, 'absent')
    assert.deepEqual(report.decision, { decision: 'refuse', reason: 'INSUFFICIENT_SIGNATURES', message: '1 of 2 required trusted signature(s) (primary-1)' })
    const nar = (await readCacheNarInfo(primaryDir, paths['quorum-b'])).url
    assert.equal(primary.count(`/${nar}`), 0, 'explain fetches no NAR')
  })

  test('explain --closure lists every path of a closure with its decision and names the refused member', async () => {
    const r = await runCli(['explain', paths['closure-top'], '--closure', '--config', narthex.configFile])
    assert.equal(r.code, 1, `exit 1 when part of the closure would not be admitted\n${r.stdout}${r.stderr}`)
    assert.match(r.stdout, new RegExp(`^admit +${paths['closure-top']}$`, 'm'))
    assert.match(r.stdout, new RegExp(`^admit +${paths.libx}$`, 'm'))
    assert.match(r.stdout, new RegExp(`^refuse +${paths['quorum-b']}\n +rule: rules\\[1\\].*INSUFFICIENT_SIGNATURES`, 'm'))
    assert.match(r.stdout, /^3 path\(s\): 2 admitted, 1 refused, 0 unavailable, 0 absent$/m)
    const json = await runCli(['explain', paths.libx, '--closure', '--json', '--config', narthex.configFile])
    assert.equal(json.code, 0, json.stderr)
    assert.deepEqual((JSON.parse(json.stdout) as { summary: unknown }).summary, { paths: 1, admitted: 1, refused: 0, unavailable: 0, absent: 0 })
  })
})
