#!/usr/bin/env node
// The least a node:http server can do for narthex's two hot answers, to tell
// narthex's own overhead from node's: a stored narinfo from memory, and a
// stored NAR file, the way narthex sends it (createReadStream, 1 MiB chunks,
// pipeline) and with three reused 1 MiB buffers instead (fs.read + res.write;
// a buffer is read into again once its write callback ran, and 'drain' is
// awaited when res.write says so).
//
//   node ceiling-server.mjs CACHE_DIR [--ballast MIB]
//   (prints the URL; GET /<hash>.narinfo, /stream/<path>, /data/<path>, /reuse/<path>)
import { createReadStream } from 'node:fs'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'

const dir = process.argv[2]
// --ballast MIB: keep that much in live JS objects, like a server's heap, to see what it does to GC.
const bi = process.argv.indexOf('--ballast')
const ballast = []
if (bi > 0) {
  for (let i = 0; i < Number(process.argv[bi + 1]) * 1024; i++) ballast.push({ i, s: `entry ${i}`.repeat(20), a: [i, i + 1, i + 2] })
}
const narinfos = new Map()
for (const f of await readdir(dir)) {
  if (f.endsWith('.narinfo')) narinfos.set(`/${f}`, await readFile(join(dir, f), 'utf8'))
}
if (narinfos.size === 0) throw new Error('no narinfos')

async function sendReused(path, res) {
  const size = (await stat(path)).size
  const fh = await open(path, 'r')
  // A buffer is reused only once the socket has taken it (its write callback ran).
  const ring = [0, 1, 2].map(() => ({ buf: Buffer.allocUnsafe(1 << 20), free: Promise.resolve() }))
  res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': size })
  try {
    let pos = 0
    for (let i = 0; pos < size && !res.destroyed; i++) {
      const slot = ring[i % ring.length]
      await slot.free
      const { bytesRead } = await fh.read(slot.buf, 0, slot.buf.length, pos)
      if (bytesRead === 0) break
      pos += bytesRead
      let release
      slot.free = new Promise((r) => (release = r))
      const more = res.write(bytesRead === slot.buf.length ? slot.buf : slot.buf.subarray(0, bytesRead), () => release())
      res.once('close', release)
      if (!more) {
        await new Promise((resolve) => {
          const done = () => {
            res.off('drain', done)
            res.off('close', done)
            resolve()
          }
          res.on('drain', done)
          res.on('close', done)
        })
      }
      res.off('close', release)
    }
    res.end()
  } finally {
    await fh.close()
  }
}

const server = createServer((req, res) => {
  const url = req.url ?? '/'
  const text = narinfos.get(url)
  if (text !== undefined) {
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': Buffer.byteLength(text) })
    res.end(text)
    return
  }
  const m = /^\/(stream|data|reuse)\/(nar\/[0-9a-z]+\.nar(?:\.[a-z]+)?)$/.exec(url)
  if (!m) {
    res.writeHead(404).end()
    return
  }
  const path = join(dir, m[2])
  if (m[1] === 'reuse') {
    sendReused(path, res).catch(() => res.destroy())
    return
  }
  stat(path).then(
    (st) => {
      res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': st.size })
      const stream = createReadStream(path, { highWaterMark: 1 << 20 })
      // /data/: also counts bytes with a 'data' listener, as narthex's sendStream does.
      let sent = 0
      if (m[1] === 'data') stream.on('data', (c) => (sent += c.length))
      pipeline(stream, res).catch(() => res.destroy())
    },
    () => res.writeHead(404).end(),
  )
})
server.keepAliveTimeout = 65_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${server.address().port}\n`)
})
