/**
 * Crash safety: the real narthex is SIGKILLed at random moments of a mixed load (narinfo and NAR
 * misses, large NARs throttled by the upstream so kills land mid-download, prefetching in the
 * background) and restarted, many times. Every NAR a client received complete is decompressed and
 * hashed: it must match its NarHash (no unverified byte is ever served; the last byte goes out
 * once the NAR is verified, before it is durable). After every kill, before any repair, the data
 * directory is checked as the crash left it: no clean marker, every indexed NAR file exists,
 * complete, and re-hashes to its FileHash and NarHash, every admitted narinfo is sound, and no
 * narinfo a client was answered is lost. A NAR served but not yet committed may be lost: it is
 * fetched again. At the end, after a restart (the repair runs in the background) and a clean stop,
 * there are no corrupt, dangling or orphaned entries nor temp files, the clean marker is there, and
 * every path is fetched again through narthex with the right bytes.
 *
 * The kill points come from a seeded generator: NARTHEX_CRASH_SEED=N repeats a run.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { narFileNameOf, parseNarInfo, parsePublicKey, validSigners, type NarInfo } from '../../src/protocol/index.js'
import { getOnce, seededRandom } from '../helpers/http.js'
import { hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'
import { checkStore, hashNarBytes, listTempFiles, narHashOfName } from '../helpers/store-check.js'

const skip = nixSkipReason()

const ITERATIONS = 20
const SMALL_PATHS = 120
const LARGE_PATHS = 16
const LARGE_BYTES = 2 * 1024 * 1024
// Each large NAR takes ~2 s to arrive: most kills find one or more half downloaded.
const LARGE_RATE = 1024 * 1024
const CLIENTS = 6
const KILL_AFTER_MS: [number, number] = [150, 2500]



interface Expected {
  storePath: string
  info: NarInfo
  /** The file name narthex stores and serves it under: `<nix32 NarHash>.nar<ext>`. */
  name: string
  /** sha256 (hex) of the NAR file nix wrote, whose decompressed bytes have the signed NarHash. */
  fileSha: string
  large: boolean
}

let nix: NixEnv
let key: NixKey
let cacheDir: string
const expected: Expected[] = []

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  const spec: Record<string, { deps?: string[]; bigBytes?: number }> = {}
  // Chains of references, so admissions queue prefetches that are in flight at kill time too.
  for (let i = 0; i < SMALL_PATHS; i++) spec[`s${i}`] = i % 4 === 0 ? {} : { deps: [`s${i - 1}`] }
  for (let i = 0; i < LARGE_PATHS; i++) spec[`l${i}`] = { bigBytes: LARGE_BYTES }
  const paths = await nix.buildClosure(spec)
  key = await nix.genKey('up-1')
  await nix.sign(key.secretFile, Object.values(paths))
  cacheDir = nix.freshDir('cache')
  const small = Object.entries(paths).filter(([n]) => n.startsWith('s')).map(([, p]) => p)
  const large = Object.entries(paths).filter(([n]) => n.startsWith('l')).map(([, p]) => p)
  await nix.copyToCache(cacheDir, small)
  await nix.copyToCache(cacheDir, large, { compression: 'zstd' })
  for (const storePath of [...small, ...large]) {
    const info = await readCacheNarInfo(cacheDir, storePath)
    const file = await readFile(join(cacheDir, info.url))
    const fileSha = createHash('sha256').update(file).digest('hex')
    assert.equal(fileSha, info.fileHash!.digest.toString('hex'), `nix wrote ${info.url} with its FileHash`)
    const name = narFileNameOf(info)
    expected.push({ storePath, info, name, fileSha, large: large.includes(storePath) })
  }
})

after(async () => {
  await nix?.cleanup()
})

describe('SIGKILL at random moments of a mixed load', { skip }, () => {
  let upstream: StaticServer
  let narthex: NarthexProcess
  let throttle = true
  const seed = Number(process.env.NARTHEX_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31))

  before(async () => {
    upstream = await startStaticServer(cacheDir)
    const largeUrls = new Set(expected.filter((e) => e.large).map((e) => `/${e.info.url}`))
    upstream.fault = (req) => (throttle && largeUrls.has(req.url ?? '') ? { kind: 'trickle', bytesPerSecond: LARGE_RATE } : undefined)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: upstream.url, publicKeys: [key.publicKey], timeoutMs: 5000, retries: 1 }],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
      prefetch: { references: true, nars: true, maxInFlight: 4 },
      log: { level: 'info' },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await upstream?.close()
  })

  test(`${ITERATIONS} kills: the store as each crash left it is sound, nothing answered is lost, and everything is served again`, async (t) => {
    const random = seededRandom(seed)
    t.diagnostic(`seed ${seed} (NARTHEX_CRASH_SEED=${seed} repeats this run)`)
    const publicKey = parsePublicKey(narthex.publicKey)
    const byHash = new Map(expected.map((e) => [hashPartOf(e.storePath), e]))
    /** Narinfos a client was answered 200: must survive any crash. NARs a client received complete: may be fetched again. */
    const answeredNarinfos = new Set<string>()
    const receivedNars = new Set<string>()
    /** sha256 (hex) of complete responses already decompressed and found to match their NarHash. */
    const soundBodies = new Set<string>()
    const figures = {
      kills: 0, midDownload: 0, tempFilesLeft: 0, orphansLeft: 0, narsChecked: 0, narinfosChecked: 0,
      verifiedResponses: 0, cutResponses: 0, unavailable: 0, servedNotDurable: 0, bodiesDecompressed: 0,
    }
    /** A complete NAR response: its bytes must be the NAR whose NarHash the name carries, as nix wrote it. */
    const checkBody = async (body: Buffer, e: Expected): Promise<string | undefined> => {
      const sha = createHash('sha256').update(body).digest('hex')
      if (!soundBodies.has(sha)) {
        const h = await hashNarBytes(body, e.name)
        figures.bodiesDecompressed++
        if (h.narHash !== narHashOfName(e.name) || h.narSize !== e.info.narSize) return 'a complete response that does not match its NarHash'
        soundBodies.add(sha)
      }
      return sha === e.fileSha ? undefined : 'a complete response with other bytes than the upstream file'
    }

    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      if (iteration > 0) await narthex.restart()
      assert.deepEqual(await listTempFiles(narthex.dataDir), [], 'temp files are removed at start')
      const base = narthex.url
      let killed = false
      const problems: string[] = []

      const client = async () => {
        while (!killed) {
          // Mostly paths not received yet (misses), some already stored (hits).
          const missing = expected.filter((e) => !receivedNars.has(e.name))
          const pool = missing.length > 0 && random() < 0.8 ? missing : expected
          const e = pool[Math.floor(random() * pool.length)]
          const hashPart = hashPartOf(e.storePath)
          try {
            const ni = await getOnce(`${base}/${hashPart}.narinfo`)
            if (ni.status === 503) {
              figures.unavailable++
              continue
            }
            if (ni.status !== 200 || !ni.complete) {
              if (ni.complete || !killed) problems.push(`${hashPart}.narinfo: ${ni.status}${ni.complete ? '' : ', cut off'}`)
              continue
            }
            const info = parseNarInfo(ni.body.toString('utf8'))
            if (info.url !== `nar/${hashPart}/${e.name}` || info.storePath.hashPart !== hashPart || !info.narHash.digest.equals(e.info.narHash.digest) || validSigners(info, [publicKey]).length !== 1) {
              problems.push(`${hashPart}.narinfo: wrong or unsigned narinfo`)
              continue
            }
            answeredNarinfos.add(hashPart)
            const nar = await getOnce(`${base}/${info.url}`)
            if (nar.status === 503) figures.unavailable++
            else if (nar.status !== 200) problems.push(`${info.url}: ${nar.status}`)
            else if (!nar.complete) {
              if (killed) figures.cutResponses++
              else problems.push(`${info.url}: cut off while narthex was running`)
            }
            else {
              const wrong = await checkBody(nar.body, e)
              if (wrong) problems.push(`${info.url}: ${wrong}`)
              else {
                figures.verifiedResponses++
                receivedNars.add(e.name)
              }
            }
          } catch (err) {
            // The connection broke or was refused because narthex was killed; before that, it is a failure.
            if (!killed) problems.push(`${hashPart}: ${(err as Error).message}`)
          }
        }
      }

      const clients = Array.from({ length: CLIENTS }, client)
      const killAfter = KILL_AFTER_MS[0] + random() * (KILL_AFTER_MS[1] - KILL_AFTER_MS[0])
      await new Promise((r) => setTimeout(r, killAfter))
      killed = true
      assert.equal(await narthex.stop('SIGKILL'), null, 'narthex was still running when killed')
      figures.kills++
      await Promise.all(clients)
      assert.deepEqual(problems, [], `iteration ${iteration}`)

      // The data directory exactly as the crash left it (nothing repaired yet).
      const temp = await listTempFiles(narthex.dataDir)
      if (temp.length > 0) figures.midDownload++
      figures.tempFilesLeft += temp.length
      const report = await checkStore(narthex.dataDir)
      assert.equal(report.clean, false, `kill ${iteration + 1}: no clean marker is left while narthex runs`)
      assert.deepEqual(
        { corrupt: report.corrupt, dangling: report.dangling, badNarinfos: report.badNarinfos },
        { corrupt: [], dangling: [], badNarinfos: [] },
        `after kill ${iteration + 1} (${killAfter.toFixed(0)} ms into the load)`,
      )
      for (const h of answeredNarinfos) assert.ok(report.narinfoKeys.has(h), `kill ${iteration + 1}: the narinfo ${h}, answered before the crash, is gone`)
      // Served once verified, committed a moment later: such a NAR is fetched again after the crash.
      for (const n of receivedNars) {
        if (report.narNames.has(n)) continue
        figures.servedNotDurable++
        receivedNars.delete(n)
      }
      for (const h of report.narinfoKeys) assert.ok(byHash.has(h), `kill ${iteration + 1}: an admitted narinfo ${h} that no upstream offered`)
      figures.orphansLeft += report.orphans.length
      figures.narsChecked += report.narRecords
      figures.narinfosChecked += report.narinfos
    }

    // A clean restart repairs what the last crash left; then every path, fetched again, is right.
    throttle = false
    const checkedBefore = narthex.logged('store checked after an unclean stop').length
    await narthex.restart()
    for (const e of expected) {
      const ni = await getOnce(`${narthex.url}/${hashPartOf(e.storePath)}.narinfo`)
      assert.equal(ni.status, 200, e.storePath)
      const info = parseNarInfo(ni.body.toString('utf8'))
      assert.deepEqual(validSigners(info, [publicKey]), [publicKey.name])
      assert.ok(info.narHash.digest.equals(e.info.narHash.digest))
      const nar = await getOnce(`${narthex.url}/${info.url}`)
      assert.equal(nar.status, 200, info.url)
      assert.ok(nar.complete, info.url)
      assert.equal(await checkBody(nar.body, e), undefined, info.url)
    }
    // The restart after the last kill repairs in the background; a stop before it ended would leave no marker.
    for (let waited = 0; narthex.logged('store checked after an unclean stop').length === checkedBefore; waited += 50) {
      assert.ok(waited < 30_000, 'the background repair ends')
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(await narthex.stop('SIGTERM'), 0)
    const final = await checkStore(narthex.dataDir)
    assert.equal(final.clean, true, 'a clean stop leaves the clean marker')
    assert.deepEqual(
      { corrupt: final.corrupt, dangling: final.dangling, orphans: final.orphans, tempFiles: final.tempFiles, badNarinfos: final.badNarinfos },
      { corrupt: [], dangling: [], orphans: [], tempFiles: [], badNarinfos: [] },
    )
    assert.equal(final.narRecords, expected.length)
    assert.equal(final.narinfos, expected.length)
    figures.narsChecked += final.narRecords
    figures.narinfosChecked += final.narinfos
    // Kills must have hit the interesting moments, or this test proves little.
    assert.ok(figures.midDownload >= ITERATIONS / 4, `only ${figures.midDownload} of ${ITERATIONS} kills found a download in flight`)
    assert.ok(figures.verifiedResponses > 0 && figures.cutResponses > 0)
    t.diagnostic(
      `kills survived: ${figures.kills} (${figures.midDownload} mid-download, ${figures.tempFilesLeft} temp files and ${figures.orphansLeft} unindexed files left behind, all removed at restart); ` +
        `NARs re-hashed: ${figures.narsChecked}, narinfos checked: ${figures.narinfosChecked}; ` +
        `client responses verified: ${figures.verifiedResponses} (${figures.bodiesDecompressed} distinct bodies decompressed against their NarHash), cut by a kill: ${figures.cutResponses}, 503: ${figures.unavailable}; ` +
        `served but not yet durable at a kill (fetched again): ${figures.servedNotDurable}`,
    )
  })
})
