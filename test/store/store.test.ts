/**
 * Opening a store after an unclean stop: what a crash left is repaired, and
 * what is not narthex's is left alone. An NFS client keeps `.nfs…` files next
 * to files still open elsewhere; such a file in `nar/<shard>/` must not stop
 * narthex from starting. (After a clean close nothing is scanned: the tests
 * remove the clean marker to stand for a crash; test/store/startup.test.ts
 * covers the marker itself.)
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { encodeNix32, formatNixHash, narFileName, parseNixHash } from '../../src/protocol/index.js'
import { Store } from '../../src/store/index.js'
import { NarthexProcess } from '../helpers/narthex.js'

/** Commits `bytes` as an uncompressed NAR file named after their sha256; returns its name. */
async function commitFile(store: Store, bytes: Buffer): Promise<string> {
  const digest = createHash('sha256').update(bytes).digest()
  const name = narFileName(encodeNix32(digest), 'none')
  const hash = formatNixHash(parseNixHash(`sha256:${encodeNix32(digest)}`))
  const temp = store.tempPath(name)
  await writeFile(temp, bytes)
  await store.commitNar(temp, name, {
    fileHash: hash,
    fileSize: bytes.length,
    narHash: hash,
    narSize: bytes.length,
    compression: 'none',
    storedAt: Date.now(),
  })
  return name
}

test('stray files under nar/ are reported and left alone; the store opens and keeps its NARs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'narthex-store-'))
  try {
    const first = await Store.open(dir)
    const name = await commitFile(first.store, Buffer.from('not really a NAR, but stored like one'))
    await first.store.close()
    const shard = join(dir, 'nar', name.slice(0, 2))
    const strays = [
      join(shard, '.nfs000000000123456700000001'),
      join(shard, `${name}.orig`),
      join(dir, 'nar', '.nfs000000000123456700000002'),
      // A valid name in the wrong shard is not this store's file either.
      join(dir, 'nar', name.slice(0, 2) === 'zz' ? 'yy' : 'zz', name),
    ]
    for (const s of strays) {
      await mkdir(join(s, '..'), { recursive: true })
      await writeFile(s, 'someone else\'s')
    }
    await rm(join(dir, 'clean'))

    const { store, recovery } = await Store.open(dir)
    try {
      assert.deepEqual(recovery.strayFiles.sort(), strays.map((s) => s.slice(join(dir, 'nar').length + 1)).sort())
      assert.equal(recovery.orphanFilesRemoved, 0)
      assert.equal(recovery.danglingEntriesRemoved, 0)
      for (const s of strays) assert.equal(await readFile(s, 'utf8'), 'someone else\'s', `${s} is kept`)
      assert.equal((await store.getNarFile(name))?.fileSize, (await stat(store.narPath(name))).size)
    } finally {
      await store.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('narthex serve starts with an .nfs file in a NAR shard directory, and serves its stored NARs', async () => {
  const narthex = await NarthexProcess.start({ log: { level: 'info' } })
  try {
    await narthex.stop()
    const { store } = await Store.open(narthex.dataDir)
    const bytes = Buffer.from('the bytes of a stored NAR file')
    const name = await commitFile(store, bytes)
    await store.close()
    const stray = join(narthex.dataDir, 'nar', name.slice(0, 2), '.nfs000000000123456700000001')
    await writeFile(stray, 'held open by another NFS client')
    await rm(join(narthex.dataDir, 'clean'))

    await narthex.restart()
    const res = await fetch(`${narthex.url}/nar/${name}`)
    assert.equal(res.status, 200)
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes)
    assert.equal(await readFile(stray, 'utf8'), 'held open by another NFS client')
    // The repair runs in the background; it logs the stray file when it has looked.
    assert.equal((await narthex.waitForLog('not NAR files')).length, 1, 'the stray file is logged')
  } finally {
    await narthex.cleanup()
  }
})
