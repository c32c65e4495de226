/**
 * The index and the audit log agree after any crash: the real narthex admits paths from a real
 * upstream cache (made with nix; narinfo answers delayed at random so admissions are in flight at
 * every moment) and is SIGKILLed at seeded random moments, many times. After each kill it is
 * started again (which replays the audit outbox) and stopped, and then every narinfo record in the
 * index has exactly one `admit` entry for its store path, no path is audited as admitted that the
 * index does not hold, no entry is written twice, and `narthex audit --verify` passes.
 *
 * The kill points come from a seeded generator: NARTHEX_CRASH_SEED=N repeats a run.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Level } from 'level'
import { formatStorePath, parseNarInfo } from '../../src/protocol/index.js'
import { auditLogPath, type AuditEntry, type NarInfoRecord } from '../../src/store/index.js'
import { getOnce, seededRandom } from '../helpers/http.js'
import { hashPartOf } from '../helpers/caches.js'
import { NarthexProcess, runCli } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

const ITERATIONS = 8
const PATHS = 120
const CLIENTS = 6
const KILL_AFTER_MS: [number, number] = [100, 700]
const NARINFO_DELAY_MS = 150

let nix: NixEnv
let key: NixKey
let cacheDir: string
const storePaths: string[] = []

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  const spec: Record<string, { deps?: string[] }> = {}
  // Short chains of references, so prefetching admits paths in the background too.
  for (let i = 0; i < PATHS; i++) spec[`a${i}`] = i % 3 === 0 ? {} : { deps: [`a${i - 1}`] }
  const paths = Object.values(await nix.buildClosure(spec))
  key = await nix.genKey('up-1')
  await nix.sign(key.secretFile, paths)
  cacheDir = nix.freshDir('cache')
  await nix.copyToCache(cacheDir, paths)
  storePaths.push(...paths)
})

after(async () => {
  await nix?.cleanup()
})

/** The store paths of the narinfo records in the index, read directly (narthex must be stopped). */
async function indexedStorePaths(dataDir: string): Promise<string[]> {
  const db = new Level<string, string>(join(dataDir, 'index'), { valueEncoding: 'utf8' })
  await db.open()
  try {
    const out: string[] = []
    for await (const rec of db.sublevel<string, NarInfoRecord>('narinfo', { valueEncoding: 'json' }).values()) {
      out.push(formatStorePath(parseNarInfo(rec.narinfo).storePath))
    }
    return out
  } finally {
    await db.close()
  }
}

async function auditEntries(dataDir: string): Promise<AuditEntry[]> {
  const text = await readFile(auditLogPath(dataDir), 'utf8').catch(() => '')
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditEntry)
}

describe('SIGKILL while admitting: the index and the audit log agree after every restart', { skip }, () => {
  let upstream: StaticServer
  let narthex: NarthexProcess
  const seed = Number(process.env.NARTHEX_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31))
  const random = seededRandom(seed)

  before(async () => {
    upstream = await startStaticServer(cacheDir)
    upstream.fault = (req) => (req.url?.endsWith('.narinfo') ? { kind: 'delayHeaders', ms: Math.floor(random() * NARINFO_DELAY_MS) } : undefined)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: upstream.url, publicKeys: [key.publicKey], timeoutMs: 5000, retries: 1 }],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
      prefetch: { references: true, nars: false, maxInFlight: 4 },
      log: { level: 'info' },
    })
  })

  after(async () => {
    await narthex?.cleanup()
    await upstream?.close()
  })

  test(`${ITERATIONS} kills: every admission has exactly one audit entry, and the chain verifies`, async (t) => {
    t.diagnostic(`seed ${seed} (NARTHEX_CRASH_SEED=${seed} repeats this run)`)
    const answered = new Set<string>()
    const figures = { kills: 0, admitted: 0, replayed: 0, alreadyLogged: 0 }

    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      if (iteration > 0) await narthex.restart()
      const base = narthex.url
      let killed = false
      const problems: string[] = []
      const client = async () => {
        while (!killed) {
          const missing = storePaths.filter((p) => !answered.has(p))
          const pool = missing.length > 0 ? missing : storePaths
          const storePath = pool[Math.floor(random() * pool.length)]
          try {
            const ni = await getOnce(`${base}/${hashPartOf(storePath)}.narinfo`)
            if (ni.status === 200 && ni.complete) answered.add(storePath)
            else if (!killed) problems.push(`${storePath}: ${ni.status}`)
          } catch (err) {
            if (!killed) problems.push(`${storePath}: ${(err as Error).message}`)
          }
        }
      }
      const clients = Array.from({ length: CLIENTS }, client)
      await new Promise((r) => setTimeout(r, KILL_AFTER_MS[0] + random() * (KILL_AFTER_MS[1] - KILL_AFTER_MS[0])))
      killed = true
      assert.equal(await narthex.stop('SIGKILL'), null, 'narthex was still running when killed')
      figures.kills++
      await Promise.all(clients)
      assert.deepEqual(problems, [], `iteration ${iteration}`)

      // Start (replaying the outbox) and stop, so the index can be read.
      const seen = narthex.logs.length
      await narthex.restart()
      assert.equal(await narthex.stop('SIGTERM'), 0)
      for (const line of narthex.logs.slice(seen)) {
        if (!line.msg.includes('reconciled the audit log')) continue
        figures.replayed += line.appended as number
        figures.alreadyLogged += line.alreadyLogged as number
      }

      const indexed = await indexedStorePaths(narthex.dataDir)
      const entries = await auditEntries(narthex.dataDir)
      const admits = new Map<string, number>()
      for (const e of entries) if (e.decision === 'admit') admits.set(e.storePath, (admits.get(e.storePath) ?? 0) + 1)
      const after = `after kill ${iteration + 1}`
      for (const p of answered) assert.ok(indexed.includes(p), `${after}: ${p}, answered before the crash, is not in the index`)
      assert.deepEqual(indexed.filter((p) => admits.get(p) !== 1).map((p) => [p, admits.get(p) ?? 0]), [], `${after}: indexed paths without exactly one admit entry`)
      assert.deepEqual([...admits.keys()].filter((p) => !indexed.includes(p)), [], `${after}: admit entries for paths the index does not hold`)
      const ids = entries.map((e) => e.id).filter((id) => id !== undefined)
      assert.equal(new Set(ids).size, ids.length, `${after}: an entry id appears twice`)
      const verify = await runCli(['audit', '--verify', '--config', narthex.configFile])
      assert.equal(verify.code, 0, `${after}: narthex audit --verify: ${verify.stdout}${verify.stderr}`)
      figures.admitted = indexed.length
    }

    assert.ok(figures.admitted > ITERATIONS, `only ${figures.admitted} paths were admitted: the kills found little to interrupt`)
    t.diagnostic(
      `kills: ${figures.kills}; paths admitted: ${figures.admitted}; ` +
        `audit entries appended from the outbox at restart: ${figures.replayed}; outbox events found already in the log: ${figures.alreadyLogged}`,
    )
  })
})
