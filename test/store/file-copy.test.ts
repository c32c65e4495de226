import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { appendFileSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { BUFFERS_PER_COPY, BUFFERS_PER_FOLLOW, COPY_CHUNK, copyFileTo, FOLLOW_CHUNK } from '../../src/file-copy.js'

function withFile(data: Buffer, fn: (fd: number, path: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-copy-'))
  const path = join(dir, 'f')
  writeFileSync(path, data)
  const fd = openSync(path, 'r')
  return fn(fd, path).finally(() => {
    closeSync(fd)
    rmSync(dir, { recursive: true, force: true })
  })
}

/** A slow sink that keeps a copy of every chunk as it was when written, and again when its callback ran. */
function recordingSink(delayMs: number) {
  const got: Buffer[] = []
  // Bytes handed to the sink whose write has not completed (the one in progress and those queued).
  let maxHeld = 0
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _e, cb) {
      maxHeld = Math.max(maxHeld, sink.writableLength)
      const copy = Buffer.from(chunk)
      setTimeout(() => {
        // The buffer must not have been reused while the socket still held it.
        assert.ok(copy.equals(chunk), 'a buffer was overwritten before its write completed')
        got.push(copy)
        cb()
      }, delayMs)
    },
  })
  return { sink, got: () => Buffer.concat(got), maxHeld: () => maxHeld }
}

test('copyFileTo: exact bytes of a range, buffers reused only after their write completed', async () => {
  const data = randomBytes(COPY_CHUNK * 9 + 12345)
  await withFile(data, async (fd) => {
    for (const [start, end] of [[0, data.length], [1, data.length - 1], [COPY_CHUNK - 3, COPY_CHUNK * 4 + 5], [5, 5 + (COPY_CHUNK * 3) / 4], [100, 101], [7, 7]] as const) {
      const { sink, got, maxHeld } = recordingSink(1)
      const sent = await copyFileTo(sink, fd, start, end)
      assert.equal(sent, end - start)
      assert.ok(got().equals(data.subarray(start, end)), `range ${start}-${end}`)
      assert.ok(maxHeld() <= BUFFERS_PER_COPY * COPY_CHUNK, `${maxHeld()} bytes held at once`)
    }
  })
})

test('copyFileTo: stops when the destination is destroyed, without hanging', async () => {
  const data = randomBytes(COPY_CHUNK * 20)
  await withFile(data, async (fd) => {
    const sink = new PassThrough({ highWaterMark: 1 })
    sink.once('data', () => sink.destroy())
    const sent = await copyFileTo(sink, fd, 0, data.length)
    assert.ok(sent < data.length)
  })
})

test('copyFileTo: follows a growing file to its end, and fails with the file’s failure', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'narthex-copy-'))
  const path = join(dir, 'g')
  writeFileSync(path, '')
  const fd = openSync(path, 'r')
  try {
    const events = new EventEmitter()
    let size = 0
    let complete = false
    let failure: Error | undefined
    const growing = {
      readable: () => (complete ? size : Math.max(0, size - 1)),
      complete: () => complete,
      failure: () => failure,
      changed: () => new Promise<void>((r) => events.once('change', r)),
    }
    const parts = [randomBytes(1000), randomBytes(COPY_CHUNK * 8 + 3), randomBytes(1)]
    // A slow client: what it holds of a download is bounded however far behind it is.
    const { sink, got, maxHeld } = recordingSink(1)
    const copying = copyFileTo(sink, fd, 0, Number.MAX_SAFE_INTEGER, growing)
    for (const p of parts) {
      await new Promise((r) => setTimeout(r, 5))
      appendFileSync(path, p)
      size += p.length
      events.emit('change')
    }
    for (const deadline = Date.now() + 10_000; got().length < size - 1 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 5))
    }
    await new Promise((r) => setTimeout(r, 20))
    // Everything but the last byte is out; the last waits for completion.
    assert.equal(got().length, size - 1)
    complete = true
    events.emit('change')
    assert.equal(await copying, size)
    assert.ok(got().equals(Buffer.concat(parts)))
    // One buffer is being read while the others wait for the client.
    assert.ok(maxHeld() >= FOLLOW_CHUNK, 'the client fell behind (the bound was put to the test)')
    assert.ok(maxHeld() <= (BUFFERS_PER_FOLLOW - 1) * FOLLOW_CHUNK, `${maxHeld()} bytes held at once`)

    const second = recordingSink(0)
    complete = false
    const failing = copyFileTo(second.sink, fd, 0, Number.MAX_SAFE_INTEGER, growing)
    // Let it send all it may (everything but the last byte), however busy the machine is.
    for (const deadline = Date.now() + 10_000; second.got().length < size - 1 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 5))
    }
    failure = new Error('verification failed')
    events.emit('change')
    await assert.rejects(failing, /verification failed/)
    assert.equal(second.got().length, size - 1, 'never the last byte of a failed file')
  } finally {
    closeSync(fd)
    rmSync(dir, { recursive: true, force: true })
  }
})
