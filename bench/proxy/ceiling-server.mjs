#!/usr/bin/env node
// The least a node:http server can do for narthex's two hot answers, to tell
// narthex's own overhead from node's: a stored narinfo from memory, and a
// stored NAR file, the way narthex sends it (createReadStream, 1 MiB chunks,
// pipeline) and with a few reused 1 MiB buffers instead (fs.read + res.write,
// waiting for 'drain').
//
//   node ceiling-server.mjs CACHE_DIR   (prints the URL; GET /<hash>.narinfo,
//                                        /stream/<path>, /reuse/<path>)
import { createReadStream } from 'node:fs'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'

const dir = process.argv[2]
const narinfos = new Map()
for (const f of await readdir(dir)) {
  if (f.endsWith('.narinfo')) narinfos.set(`/${f}`, await readFile(join(dir, f), 'utf8'))
}
if (narinfos.size === 0) throw new Error('no narinfos')

async function sendReused(path, res) {
  const size = (await stat(path)).size
  const fh = await open(path, 'r')
  const bufs = [Buffer.allocUnsafe(1 << 20), Buffer.allocUnsafe(1 << 20), Buffer.allocUnsafe(1 << 20)]
  res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': size })
  try {
    let pos = 0
    let i = 0
    while (pos < size && !res.destroyed) {
      const buf = bufs[i++ % bufs.length]
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
      if (bytesRead === 0) break
      pos += bytesRead
      // The buffer is reused two reads later: wait for the socket to take it when it is full.
      if (!res.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) {
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
  const m = /^\/(stream|reuse)\/(nar\/[0-9a-z]+\.nar(?:\.[a-z]+)?)$/.exec(url)
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
      pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), res).catch(() => res.destroy())
    },
    () => res.writeHead(404).end(),
  )
})
server.keepAliveTimeout = 65_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${server.address().port}\n`)
})
