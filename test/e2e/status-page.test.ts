/**
 * The status page in a real headless browser (Debian's Chromium driven by
 * playwright-core), served by narthex with two worker processes, after a
 * scripted mix of hits, misses, absent paths, a refusal and a conflict: the
 * figures on the page are the ones sent, they refresh without a reload, the
 * page loads nothing from elsewhere, and the nix.conf lines carry this server's
 * URL. Screenshots are kept in test-artifacts/ (desktop and phone width).
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { formatPublicKey, generateSecretKey, toPublicKey } from '../../src/protocol/index.js'
import { addToCache, fakePath, type FakePath } from '../helpers/fake-cache.js'
import { getOnce } from '../helpers/http.js'
import { NarthexProcess, ROOT } from '../helpers/narthex.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = join(ROOT, 'test-artifacts')

function skipReason(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined
  if (process.env.CI === 'true') return undefined // fails below: CI must have it (.ci/run installs it)
  const reason = `SKIPPED: ${CHROMIUM} is missing (apt-get install -y chromium); the status page is not tested in a browser`
  process.stderr.write(`\n*** ${reason} ***\n\n`)
  return reason
}

describe('the status page in a browser, narthex with two workers', { skip: skipReason() }, () => {
  let root: string
  const ups: StaticServer[] = []
  let narthex: NarthexProcess
  let context: BrowserContext
  let page: Page
  let paths: FakePath[]
  let denied: FakePath
  const external: string[] = []

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`)
    root = await mkdtemp(join(tmpdir(), 'narthex-status-'))
    const keys = [generateSecretKey('up-1'), generateSecretKey('up-2')]
    const dirs = [join(root, 'up-1'), join(root, 'up-2')]
    paths = [0, 1, 2].map((i) => fakePath(`status-${i}`, `status page path ${i}\n`.repeat(100), keys[0]))
    denied = fakePath('status-denied', 'never admitted', keys[0])
    for (const p of [...paths, denied]) await addToCache(dirs[0], p)
    // The same store path built differently by each upstream, both validly signed: a conflict.
    await addToCache(dirs[0], fakePath('strict-conflict', 'one build', keys[0]))
    await addToCache(dirs[1], fakePath('strict-conflict', 'another build', keys[1]))
    for (const d of dirs) ups.push(await startStaticServer(d))
    // up-2 is sent a netrc password (the static server ignores it): the page must not show it.
    const netrc = join(dirs[1], '..', 'up-2.netrc')
    await writeFile(netrc, `machine 127.0.0.1 login reader password upstream-password-42\n`, { mode: 0o600 })
    narthex = await NarthexProcess.start({
      workers: 2,
      upstreams: ups.map((u, i) => ({
        name: `up-${i + 1}`,
        url: u.url,
        ...(i === 1 ? { netrcFile: netrc } : {}),
        publicKeys: [formatPublicKey(toPublicKey(keys[i]))],
        retries: 0,
      })),
      rules: [
        { match: 'strict-*', upstreams: ['up-1', 'up-2'], onConflict: 'refuse' },
        { match: '*', upstreams: ['up-1', 'up-2'] },
      ],
      deny: { paths: [denied.storePath] },
      storage: { maxSize: '1GiB' },
      // The test counts the hits and misses it causes: nothing fetched ahead of it.
      prefetch: { references: false, nars: false },
    })

    const get = async (path: string, status = 200) => assert.equal((await getOnce(`${narthex.url}${path}`)).status, status, path)
    // 6 misses (3 narinfos, 3 NARs), then 9 hits (6 narinfos, 3 NARs), and 3 absent: a refusal, a conflict, an unknown path.
    for (const p of paths) {
      await get(`/${p.hashPart}.narinfo`)
      await get(`/${p.info.url}`)
    }
    for (const p of paths) {
      await get(`/${p.hashPart}.narinfo`)
      await get(`/${p.hashPart}.narinfo`)
      await get(`/${p.info.url}`)
    }
    await get(`/${denied.hashPart}.narinfo`, 404)
    await get(`/${fakePath('strict-conflict', '').hashPart}.narinfo`, 404)
    await get(`/${'0'.repeat(32)}.narinfo`, 404)
    // Workers count a request once its response has ended.
    await new Promise((r) => setTimeout(r, 300))

    await mkdir(ARTIFACTS, { recursive: true })
    context = await chromium.launchPersistentContext(await mkdtemp(join(tmpdir(), 'narthex-chromium-')), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1100, height: 900 },
    })
    page = context.pages()[0] ?? (await context.newPage())
    page.on('request', (r) => {
      if (!r.url().startsWith(narthex.url)) external.push(r.url())
    })
    const res = await page.goto(`${narthex.url}/`)
    assert.equal(res?.status(), 200)
  })

  after(async () => {
    await context?.close()
    await narthex?.cleanup()
    for (const u of ups) await u.close()
    if (root) await rm(root, { recursive: true, force: true })
  })

  const text = async (key: string) => (await page.locator(`[data-k="${key}"]`).first().textContent())?.trim()
  // Evaluated in the page (strings: this project's TypeScript has no DOM types).
  const cells = (tbody: string) => page.evaluate<string[][]>(`[...document.querySelectorAll('#${tbody} tr')].map((r) => [...r.cells].map((c) => c.textContent))`)

  test('the figures are the ones sent: hit ratio, hits, misses, outcomes, store', async () => {
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true })
    assert.equal(await text('hitRatio'), '60.0 %', '9 hits of 15 hits and misses')
    assert.equal(await text('hits'), '9')
    assert.equal(await text('misses'), '6')
    assert.equal(await text('other'), '3')
    const outcomes = await cells('outcomes')
    const count = (kind: string, outcome: string) => outcomes.find((r) => r[0] === kind && r[1] === outcome)?.[2]
    assert.equal(count('narinfo', 'hit'), '6')
    assert.equal(count('narinfo', 'miss'), '3')
    assert.equal(count('narinfo', 'absent'), '3')
    assert.equal(count('nar', 'hit'), '3')
    assert.equal(count('nar', 'miss'), '3')
    assert.match((await text('storeUsed')) ?? '', /^[\d.]+ KiB of 1\.00 GiB \(0\.0 %\)$/)
    assert.equal(await text('refusals'), '2')
    const upstreams = await cells('upstreams')
    assert.deepEqual(upstreams.map((r) => [r[0], r[2], r[6], r[7]]), [['up-1', 'up', '0', 'none'], ['up-2', 'up', '0', 'none']])
    assert.deepEqual(external, [], 'the page loads nothing from elsewhere')
    // The chart: the minutes' tooltips add up to what was sent (the mix may straddle a minute).
    const tips = await page.evaluate<string[]>(`[...document.querySelectorAll('#chart svg g title')].map((t) => t.textContent)`)
    const total = (word: string) => tips.reduce((n, t) => n + Number(new RegExp(`(\\d+) ${word}`).exec(t)?.[1] ?? 0), 0)
    assert.deepEqual([total('hits'), total('misses'), total('other')], [9, 6, 3], tips.join('\n'))
  })

  test('the refusal and the conflict are listed with their reason and upstreams', async () => {
    const recent = await cells('recent')
    const deniedRow = recent.find((r) => r[3] === 'DENIED')
    assert.ok(deniedRow, JSON.stringify(recent))
    assert.equal(deniedRow[2], denied.storePath)
    const conflict = recent.find((r) => r[3] === 'CONFLICT')
    assert.ok(conflict, JSON.stringify(recent))
    assert.match(conflict[5], /up-1/)
    assert.match(conflict[5], /up-2/)
  })

  test('the nix.conf and NixOS lines carry this server\'s URL and key', async () => {
    const nixConf = (await page.locator('#nixconf').textContent()) ?? ''
    assert.match(nixConf, new RegExp(`^substituters = ${narthex.url.replace(/[.]/g, '\\.')}$`, 'm'))
    assert.ok(nixConf.includes(`trusted-public-keys = ${narthex.publicKey}`))
    assert.ok(((await page.locator('#nixos').textContent()) ?? '').includes(`substituters = [ "${narthex.url}" ];`))
    assert.match((await page.textContent('body')) ?? '', /ignoring untrusted substituter/)
    const secret = (await readFile(join(narthex.dir, 'narthex.key'), 'utf8')).trim()
    const html = await page.content()
    assert.ok(!html.includes(secret.slice(secret.indexOf(':') + 1, secret.indexOf(':') + 41)), 'no secret key on the page')
    assert.ok(!html.includes('upstream-password-42'), 'no upstream password on the page')
    assert.ok(html.includes(ups[1].url), 'the upstream URL')
  })

  test('the figures refresh without a reload', async () => {
    await getOnce(`${narthex.url}/${paths[0].info.url}`)
    await page.waitForFunction(`document.querySelector('[data-k="hits"]').textContent === '10'`, undefined, { timeout: 20_000 })
    assert.equal(await text('hitRatio'), '62.5 %', '10 hits of 16')
    // The store's entries are counted in the background: a refresh or two later.
    await page.waitForFunction(`document.querySelector('[data-k="paths"]').textContent === '3'`, undefined, { timeout: 20_000 }).catch(() => undefined)
    assert.equal(await text('paths'), '3', 'paths stored (the refused ones are not)')
    assert.equal(await text('narFiles'), '3')
    assert.equal(await text('pinned'), '0')
    await page.setViewportSize({ width: 390, height: 844 })
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-phone.png'), fullPage: true })
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth')
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`)
  })
})
