/**
 * Start-up that does not grow with the store: after a clean close the next
 * open scans nothing (the clean marker carries the total bytes); after an
 * unclean stop (no marker) the store is usable at once while the repair runs in
 * the background, and the repair removes orphan files and drops dangling
 * entries but never a file a commit renames in while it runs.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { encodeNix32, formatNixHash, narFileName, parseNixHash } from '../../src/protocol/index.js'
import { Store } from '../../src/store/index.js'

const ENTRIES = 3000

function nameOf(bytes: Buffer): { name: string; hash: string } {
  const digest = createHash('sha256').update(bytes).digest()
  return { name: narFileName(encodeNix32(digest), 'none'), hash: formatNixHash(parseNixHash(`sha256:${encodeNix32(digest)}`)) }
}

/** Commits `bytes` as an uncompressed NAR file named after their sha256; returns its name. */
async function commitFile(store: Store, bytes: Buffer): Promise<string> {
  const { name, hash } = nameOf(bytes)
  const temp = store.tempPath(name)
  await writeFile(temp, bytes)
  await store.commitNar(temp, name, { fileHash: hash, fileSize: bytes.length, narHash: hash, narSize: bytes.length, compression: 'none', storedAt: Date.now() })
  return name
}

/** A store in a fresh directory holding `n` small NAR files, committed concurrently (group commits). */
async function filledStore(n: number): Promise<{ dir: string; names: string[]; bytes: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-startup-'))
  const { store } = await Store.open(dir)
  const names: string[] = []
  let bytes = 0
  for (let i = 0; i < n; i += 200) {
    const batch = Array.from({ length: Math.min(200, n - i) }, (_, k) => Buffer.from(`NAR number ${i + k}`))
    names.push(...(await Promise.all(batch.map((b) => commitFile(store, b)))))
    for (const b of batch) bytes += b.length
  }
  const figures = store.commitFigures
  assert.ok(figures.narFlushes < figures.nars / 10, `commits were grouped (${figures.nars} NARs in ${figures.narFlushes} flushes)`)
  await store.close()
  return { dir, names, bytes }
}

const exists = (path: string) => access(path).then(() => true, () => false)

test(`after a clean close, a store of ${ENTRIES} NARs opens without a scan and knows its size`, async () => {
  const { dir, names, bytes } = await filledStore(ENTRIES)
  try {
    const started = Date.now()
    const { store, recovery } = await Store.open(dir)
    const openMs = Date.now() - started
    try {
      assert.equal(recovery.clean, true)
      assert.equal(recovery.scanned, false, 'no scan after a clean close')
      assert.equal(store.totalBytes, bytes)
      assert.equal((await store.getNarFile(names[17]))?.fileSize, `NAR number 17`.length)
      assert.ok(openMs < 2000, `opened in ${openMs} ms`)
    } finally {
      await store.close()
    }
    // The marker is taken at open: a crash now (no close) would be seen as one.
    const again = await Store.open(dir)
    assert.equal(again.recovery.clean, true)
    await again.store.close()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('after a crash (no marker) the store serves at once while the repair runs; orphans go, dangling entries go, a file committed meanwhile stays', async () => {
  const { dir, names, bytes } = await filledStore(ENTRIES)
  try {
    // What a crash leaves: no marker, a temp file, a file renamed in but never indexed, and
    // (from outside) an indexed file that is gone and one cut short.
    await rm(join(dir, 'clean'))
    await writeFile(join(dir, 'tmp', 'abc-download.part'), 'half a NAR')
    const orphan = nameOf(Buffer.from('renamed in, never indexed'))
    const orphanPath = join(dir, 'nar', orphan.name.slice(0, 2), orphan.name)
    await mkdir(dirname(orphanPath), { recursive: true })
    await writeFile(orphanPath, 'renamed in, never indexed')
    const gone = names[5]
    const short = names[6]
    await rm(join(dir, 'nar', gone.slice(0, 2), gone))
    await writeFile(join(dir, 'nar', short.slice(0, 2), short), 'x')

    const { store, recovery } = await Store.open(dir, { repair: 'background' })
    let total = -1
    try {
      assert.equal(recovery.clean, false)
      assert.equal(recovery.tempFilesRemoved, 1, 'temp files are removed before open returns')
      let repairDone = false
      void store.repaired.then(() => (repairDone = true))
      // Usable at once: an indexed NAR is found, and commits go through while the repair runs.
      assert.equal((await store.getNarFile(names[100]))?.fileSize, 'NAR number 100'.length)
      const during = await Promise.all(Array.from({ length: 50 }, (_, i) => commitFile(store, Buffer.from(`committed during the repair ${i}`))))
      assert.equal(repairDone, false, 'the commits landed while the repair was still running')
      const report = await store.repaired
      assert.equal(report.scanned, true)
      assert.equal(report.orphanFilesRemoved, 1)
      assert.equal(report.danglingEntriesRemoved, 2)
      assert.equal(await exists(orphanPath), false, 'the orphan is removed')
      assert.equal(await store.getNarFile(gone), undefined)
      assert.equal(await store.getNarFile(short), undefined)
      for (const name of during) {
        assert.ok(await exists(store.narPath(name)), `${name}, committed during the repair, is kept`)
        assert.ok(await store.getNarFile(name), `${name} is indexed`)
      }
      const duringBytes = during.reduce((n, _, i) => n + `committed during the repair ${i}`.length, 0)
      const lost = 'NAR number 5'.length + 'NAR number 6'.length
      assert.equal(store.totalBytes, bytes - lost + duringBytes, 'the total counts what the repair found plus what came meanwhile')
      total = store.totalBytes
    } finally {
      await store.close()
    }
    const reopened = await Store.open(dir)
    assert.equal(reopened.recovery.clean, true, 'a close after a finished repair is clean')
    assert.equal(reopened.store.totalBytes, total, 'the marker carries the total')
    await reopened.store.close()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
