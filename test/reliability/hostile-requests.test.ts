/**
 * Hostile requests against the real narthex, sent byte for byte over raw sockets (fetch would
 * normalise `..`, `%2e%2e` and the rest away): path traversal in every encoding, malformed
 * hashes, overlong URLs and headers, unknown methods, HEAD/GET/PUT mismatches and plain garbage.
 *
 * Each must get a 4xx, or have its connection closed when it is not HTTP at all; no byte of a file
 * outside the store (secrets planted next to and inside the data directory, the signing key,
 * /etc/passwd, an unindexed file under nar/) may ever appear in a response; and after each one a
 * normal request still works.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { parseNarInfo, parseSecretKey } from '../../src/protocol/index.js'
import { hashPartOf, readCacheNarInfo } from '../helpers/caches.js'
import { NarthexProcess } from '../helpers/narthex.js'
import { NixEnv, nixSkipReason, type NixKey } from '../helpers/nix.js'
import { startStaticServer, type StaticServer } from '../helpers/static-server.js'

const skip = nixSkipReason()

/** What came back on one raw connection. */
interface Exchange {
  /** Status of each response received, in order (pipelined requests get several). */
  statuses: number[]
  /** Every byte received. */
  raw: Buffer
  /** True when the server closed the connection (it always should, the client half-closes). */
  closed: boolean
}

/**
 * Writes `request` on a fresh connection to `port` and collects everything until the server closes
 * (or `timeoutMs` passes, which counts as not closed). Requests carry `Connection: close`; garbage
 * is sent with `halfClose`, so the parser sees its end. (A half-close also makes node's server drop
 * a request still being answered: only for bytes that are not a complete request.)
 */
function exchange(port: number, request: Buffer | string, opts: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const raw = Buffer.concat(chunks)
      // Interim 1xx answers (100 Continue) are not responses of their own.
      const statuses = [...raw.toString('latin1').matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1])).filter((s) => s >= 200)
      resolve({ statuses, raw, closed })
    }
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5000)
    socket.on('data', (c: Buffer) => chunks.push(c))
    // A reset after a 4xx (the server closing while our bytes are still unread) is still a close.
    socket.on('error', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('connect', () => {
      socket.write(typeof request === 'string' ? Buffer.from(request, 'latin1') : request)
      if (opts.halfClose) socket.end()
    })
  })
}

/** A GET (or `method`) request for `target` exactly as written, with `Connection: close`. */
function requestFor(target: string, method = 'GET', extra = ''): string {
  return `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}Connection: close\r\n\r\n`
}

let nix: NixEnv
let key: NixKey
let cacheDir: string
let app: string
let unknown: string

before(async () => {
  if (skip !== undefined) return
  nix = await NixEnv.create()
  const paths = await nix.buildClosure({ app: { bigBytes: 64 * 1024 }, unknown: {} })
  app = paths.app!
  unknown = paths.unknown!
  key = await nix.genKey('up-1')
  await nix.sign(key.secretFile, [app])
  cacheDir = nix.freshDir('cache')
  await nix.copyToCache(cacheDir, [app])
})

after(async () => {
  await nix?.cleanup()
})

for (const workers of [0, 2]) describe(`hostile requests (${workers === 0 ? 'one process' : `${workers} worker processes`})`, { skip }, () => {
  let upstream: StaticServer
  let narthex: NarthexProcess
  let port: number
  let narUrl: string
  let narBytes: Buffer
  let narinfoText: string
  /** Strings that must never appear in any response. */
  let forbidden: Array<[string, Buffer]>
  let tried = 0

  before(async () => {
    upstream = await startStaticServer(cacheDir)
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: upstream.url, publicKeys: [key.publicKey], timeoutMs: 2000, retries: 0 }],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
      workers,
      log: { level: 'info' },
    })
    port = Number(new URL(narthex.url).port)
    const res = await fetch(`${narthex.url}/${hashPartOf(app)}.narinfo`)
    assert.equal(res.status, 200)
    narinfoText = await res.text()
    narUrl = `/${parseNarInfo(narinfoText).url}`
    narBytes = Buffer.from(await (await fetch(`${narthex.url}${narUrl}`)).arrayBuffer())
    assert.ok(narBytes.equals(await readFile(join(cacheDir, (await readCacheNarInfo(cacheDir, app)).url))))

    // Secrets next to the data directory, inside it, in nar/ and in a shard directory: none may ever
    // be served. The single process also answers NARs only through the index, so a file under a
    // valid NAR name that no entry names is planted too. (Worker fronts serve any file under nar/
    // without the index, by design: files appear there only by the verified commit's rename.)
    const token = `NARTHEX-SECRET-${randomBytes(12).toString('hex')}`
    const name = narUrl.slice(narUrl.lastIndexOf('/') + 1)
    const unindexed = `${'0'.repeat(52)}.nar`
    await writeFile(join(narthex.dir, 'secret.txt'), `${token}-beside\n`)
    await writeFile(join(narthex.dataDir, 'secret.txt'), `${token}-inside\n`)
    await writeFile(join(narthex.dataDir, 'nar', 'secret.txt'), `${token}-nar\n`)
    await writeFile(join(narthex.dataDir, 'nar', name.slice(0, 2), 'secret.txt'), `${token}-shard\n`)
    if (workers === 0) {
      await mkdir(join(narthex.dataDir, 'nar', '00'), { recursive: true })
      await writeFile(join(narthex.dataDir, 'nar', '00', unindexed), `${token}-unindexed\n`)
    }
    const secretKey = (await readFile(join(narthex.dir, 'narthex.key'), 'utf8')).trim()
    assert.ok(parseSecretKey(secretKey))
    forbidden = [
      ['a planted secret', Buffer.from(token)],
      ['narthex’s secret key', Buffer.from(secretKey.slice(secretKey.indexOf(':') + 1, secretKey.indexOf(':') + 40))],
      ['/etc/passwd', Buffer.from('root:x:0:0')],
      ['the data directory’s path', Buffer.from(narthex.dir)],
      ['the LevelDB manifest', Buffer.from('leveldb.BytewiseComparator')],
    ]
  })

  after(async () => {
    await narthex?.cleanup()
    await upstream?.close()
  })

  function assertNoLeak(ex: Exchange, what: string): void {
    for (const [label, bytes] of forbidden) assert.equal(ex.raw.indexOf(bytes), -1, `${what}: the response contains ${label}`)
  }

  /** The server still answers a normal request, on a fresh connection. */
  async function assertStillServing(after: string): Promise<void> {
    const ex = await exchange(port, requestFor('/nix-cache-info'))
    assert.deepEqual(ex.statuses, [200], `after ${after}: /nix-cache-info got ${ex.statuses.join(',')}`)
    assert.ok(narthex.child!.exitCode === null && narthex.child!.signalCode === null, `narthex died after ${after}`)
  }

  /** Sends each request; every response must be 4xx (or, with `mayClose`, no response at all). */
  async function expectRejected(cases: Array<[string, Buffer | string]>, opts: { mayClose?: boolean; statuses?: number[] } = {}): Promise<void> {
    for (const [what, request] of cases) {
      tried++
      // Malformed bytes (mayClose) are half-closed so the parser sees where they end.
      const ex = await exchange(port, request, { halfClose: opts.mayClose === true })
      assert.ok(ex.closed, `${what}: the connection was left open`)
      assertNoLeak(ex, what)
      if (ex.statuses.length === 0) assert.ok(opts.mayClose, `${what}: closed without an answer`)
      for (const status of ex.statuses) {
        if (opts.statuses) assert.ok(opts.statuses.includes(status), `${what}: got ${status}, expected one of ${opts.statuses.join(",")}`)
        else assert.ok(status >= 400 && status < 500, `${what}: got ${status}`)
      }
      await assertStillServing(what)
    }
  }

  test('path traversal in every encoding is 400 or 404, never a file', async () => {
    const name = narUrl.slice(narUrl.lastIndexOf('/') + 1)
    const h = hashPartOf(app)
    const targets = [
      '/../../etc/passwd',
      '/../secret.txt',
      '/nar/../secret.txt',
      '/nar/../../secret.txt',
      '/nar/../../../../../../etc/passwd',
      `/nar/${name}/../../secret.txt`,
      `/${h}.narinfo/../../secret.txt`,
      '/nix-cache-info/..',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/%2E%2E/secret.txt',
      '/nar/%2e%2e/secret.txt',
      '/nar/%2e%2e%2f%2e%2e%2fsecret.txt',
      '/..%2fsecret.txt',
      '/.%2e/secret.txt',
      '/%2e./secret.txt',
      '/nar%2f..%2f..%2fsecret.txt',
      '/%252e%252e/%252e%252e/secret.txt',
      '/%252e%252e%252fsecret.txt',
      '/%25252e%25252e/secret.txt',
      '/nar/..\\..\\secret.txt',
      '/nar\\..\\..\\secret.txt',
      '/..\\secret.txt',
      '/%5c..%5csecret.txt',
      '/nar/%00',
      '/secret.txt%00.narinfo',
      `/nar/${name}%00.txt`,
      '/%c0%ae%c0%ae/secret.txt',
      '/%c0%ae%c0%ae%c0%afsecret.txt',
      '/%e0%80%ae%e0%80%ae/secret.txt',
      '/%f0%80%80%ae%f0%80%80%ae/secret.txt',
      '/%c1%9c..%c1%9csecret.txt',
      '/%uff0e%uff0e/secret.txt',
      '/\uff0e\uff0e/secret.txt',
      '/..;/secret.txt',
      '/./secret.txt',
      '/nar/./secret.txt',
      '//etc/passwd',
      '/nar//etc/passwd',
      '///secret.txt',
      '/secret.txt',
      '/data/secret.txt',
      '/narthex.key',
      '/data/narthex.key',
      '/data/index/CURRENT',
      '/index/CURRENT',
      '/nar/secret.txt',
      `/nar/${name.slice(0, 2)}/${name}`,
      `/nar/${name.slice(0, 2)}/secret.txt`,
      `/nar/${'0'.repeat(52)}.nar`,
      `/nar/${hashPartOf(app)}/secret.txt`,
      `/nar/${hashPartOf(app)}/${name.slice(0, 2)}/${name}`,
      '/proc/self/environ',
      '/dev/zero',
      '/~root/.ssh/id_rsa',
      'secret.txt',
      '*',
      'http://127.0.0.1/../secret.txt',
      `http://127.0.0.1:${new URL(narthex?.url ?? 'http://x:1').port}/nix-cache-info`,
      'http://example.com/nix-cache-info',
      '127.0.0.1:80',
    ]
    await expectRejected(targets.map((t) => [`GET ${t}`, requestFor(t)]), { statuses: [400, 404] })
    // Bytes no URL encoder would send: a raw NUL, an overlong UTF-8 dot pair, DEL, a raw backslash.
    const rawTargets: Array<[string, Buffer]> = [
      ['raw NUL', Buffer.from('GET /nar/\0../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'latin1')],
      ['raw overlong UTF-8 ..', Buffer.concat([Buffer.from('GET /'), Buffer.from([0xc0, 0xae, 0xc0, 0xae]), Buffer.from('/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n')])],
      ['raw UTF-8 fullwidth dots', Buffer.from('GET /\uff0e\uff0e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n', 'utf8')],
      ['raw DEL', Buffer.from('GET /\x7f../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1')],
      ['raw tab in path', Buffer.from('GET /..\t/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1')],
    ]
    await expectRejected(rawTargets, { mayClose: true })
  })

  test('malformed hashes and names are 4xx', async () => {
    const h = hashPartOf(app)
    const name = narUrl.slice(narUrl.lastIndexOf('/') + 1)
    const nix32 = name.slice(0, 52)
    const targets = [
      `/${h.slice(1)}.narinfo`,
      `/${h}0.narinfo`,
      `/${h.toUpperCase()}.narinfo`,
      `/${'e'.repeat(32)}.narinfo`,
      `/${'o'.repeat(32)}.narinfo`,
      `/${'t'.repeat(16)}${'u'.repeat(16)}.narinfo`,
      `/${h}.narinfo.`,
      `/${h}.NARINFO`,
      `/${h}.narinfo/`,
      `/${h}-app.narinfo`,
      `/${h}`,
      `/${h.slice(1)}.ls`,
      `/realisations/${h}.doi`,
      `/nar/${nix32.slice(1)}.nar.xz`,
      `/nar/${nix32}0.nar.xz`,
      `/nar/${'z'.repeat(52)}.nar.xz`,
      `/nar/${nix32.toUpperCase()}.nar.xz`,
      `/nar/${nix32}.nar.gzip`,
      `/nar/${nix32}.nar.xz.xz`,
      `/nar/${nix32}.nar.exe`,
      `/nar/${nix32}`,
      `/nar/${nix32}.tar`,
      `/nar/${nix32}.nar.xz/`,
      '/nar/',
      '/nar',
      `/nar/sha256:${nix32}.nar`,
      `/nar/${h}.nar`,
      '/log/foo.drv',
      '/realisations/sha256:00!out.doi',
      `/${'a'.repeat(8000)}.narinfo`,
    ]
    await expectRejected(targets.map((t) => [`GET ${t.slice(0, 80)}`, requestFor(t)]), { statuses: [400, 404] })
  })

  test('overlong URLs and headers are 4xx (431/414), and the server keeps serving', async () => {
    const h = hashPartOf(app)
    await expectRejected(
      [
        ['a 100 KB URL', requestFor(`/${'a'.repeat(100_000)}`)],
        ['a 100 KB narinfo URL', requestFor(`/${h}.narinfo?${'x'.repeat(100_000)}`)],
        ['a 1 MB URL', requestFor(`/${'%2e'.repeat(350_000)}`)],
        ['a 100 KB header', requestFor('/nix-cache-info', 'GET', `X-Long: ${'v'.repeat(100_000)}\r\n`)],
        ['5000 headers', requestFor('/nix-cache-info', 'GET', Array.from({ length: 5000 }, (_, i) => `X-H${i}: ${i}\r\n`).join(''))],
        ['a 64 KB Cookie', requestFor('/nix-cache-info', 'GET', `Cookie: ${'c=1; '.repeat(13_000)}\r\n`)],
      ],
      { mayClose: true },
    )
  })

  test('methods other than GET and HEAD are refused, and a PUT stores nothing', async () => {
    const h = hashPartOf(app)
    const targets = ['/nix-cache-info', `/${h}.narinfo`, narUrl, '/', '/nar/']
    const methods = ['DELETE', 'PATCH', 'PROPFIND', 'TRACE', 'OPTIONS', 'POST', 'PUT', 'MKCOL', 'LOCK', 'PURGE', 'SEARCH', 'COPY', 'MOVE', 'LINK']
    const cases: Array<[string, string]> = []
    for (const m of methods) for (const t of targets) cases.push([`${m} ${t}`, requestFor(t, m)])
    await expectRejected(cases, { statuses: [400, 404, 405, 501] })
    // Not even a method name, or one node's parser refuses outright: 400 or a closed connection.
    await expectRejected(
      [
        ['CONNECT', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'],
        ['lower-case get', 'get /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n'],
        ['BREW', requestFor('/nix-cache-info', 'BREW')],
        ['a 10 KB method', requestFor('/nix-cache-info', 'X'.repeat(10_000))],
        ['G\\0T', requestFor('/nix-cache-info', 'G\0T')],
      ],
      { mayClose: true },
    )

    // A PUT of a narinfo and a NAR for a path narthex never admitted: refused, and nothing appears.
    const fake = await readFile(join(cacheDir, `${h}.narinfo`), 'utf8')
    const uh = hashPartOf(unknown)
    const forged = fake.replace(/^StorePath: .*$/m, `StorePath: ${unknown}`)
    const putNarinfo = `PUT /${uh}.narinfo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-nix-narinfo\r\nContent-Length: ${Buffer.byteLength(forged)}\r\nConnection: close\r\n\r\n${forged}`
    const body = 'X'.repeat(4096)
    const putNar = `PUT /nar/${'1'.repeat(52)}.nar HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n${body}`
    await expectRejected(
      [
        ['PUT narinfo', putNarinfo],
        ['PUT NAR', putNar],
      ],
      { statuses: [400, 401, 403, 404, 405, 413] },
    )
    assert.deepEqual((await exchange(port, requestFor(`/${uh}.narinfo`))).statuses, [404], 'a PUT narinfo became visible')
    assert.deepEqual((await exchange(port, requestFor(`/nar/${'1'.repeat(52)}.nar`))).statuses, [404], 'a PUT NAR became visible')
  })

  test('HEAD, ranges and request bodies: HEAD matches GET without a body, ranges are exact or 416', async () => {
    const h = hashPartOf(app)
    const headInfo = await exchange(port, requestFor(`/${h}.narinfo`, 'HEAD'))
    assert.deepEqual(headInfo.statuses, [200])
    assert.match(headInfo.raw.toString('latin1'), new RegExp(`content-length: ${Buffer.byteLength(narinfoText)}\\r\\n`, 'i'))
    assert.ok(headInfo.raw.toString('latin1').endsWith('\r\n\r\n'), 'HEAD narinfo carried a body')
    const headNar = await exchange(port, requestFor(narUrl, 'HEAD'))
    assert.deepEqual(headNar.statuses, [200])
    assert.match(headNar.raw.toString('latin1'), new RegExp(`content-length: ${narBytes.length}\\r\\n`, 'i'))
    assert.ok(headNar.raw.toString('latin1').endsWith('\r\n\r\n'), 'HEAD NAR carried a body')

    const ranged = async (range: string) => {
      const res = await fetch(`${narthex.url}${narUrl}`, { headers: { range } })
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()), contentRange: res.headers.get('content-range') }
    }
    const n = narBytes.length
    const exact: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 0],
      ['bytes=0-', 0, n - 1],
      ['bytes=-1', n - 1, n - 1],
      ['bytes=10-19', 10, 19],
      [`bytes=${n - 5}-${n + 1000}`, n - 5, n - 1],
      [`bytes=-${n + 1000}`, 0, n - 1],
    ]
    for (const [range, start, end] of exact) {
      tried++
      const r = await ranged(range)
      assert.equal(r.status, 206, range)
      assert.equal(r.contentRange, `bytes ${start}-${end}/${n}`, range)
      assert.ok(r.body.equals(narBytes.subarray(start, end + 1)), range)
    }
    for (const range of ['bytes=-0', `bytes=${n}-`, `bytes=${n + 5}-${n + 9}`, 'bytes=5-2', 'bytes=99999999999999999999-']) {
      tried++
      const r = await ranged(range)
      assert.equal(r.status, 416, range)
      assert.equal(r.contentRange, `bytes */${n}`, range)
    }
    // Not a single plain range: ignored, the whole file.
    for (const range of ['bytes=0-1,5-6', 'bytes=abc', 'items=0-1', 'bytes=--1', 'bytes= 0-1', '']) {
      tried++
      const r = await ranged(range)
      assert.equal(r.status, 200, range)
      assert.ok(r.body.equals(narBytes), range)
    }

    // A GET carrying a body (Content-Length or chunked) is answered normally; the body is ignored.
    for (const [what, req] of [
      ['Content-Length body', `GET /${h}.narinfo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world`],
      ['chunked body', `GET /${h}.narinfo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
      ['Expect: 100-continue', `GET /${h}.narinfo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`],
    ] as const) {
      tried++
      const ex = await exchange(port, req)
      assert.equal(ex.statuses.at(-1), 200, what)
      assert.ok(ex.raw.toString('utf8').endsWith(narinfoText), what)
    }
    // Expect on requests only the core answers (with workers, they are passed on to it).
    for (const target of ['/nix-cache-info', `/${hashPartOf(unknown)}.narinfo`, `/nar/${'1'.repeat(52)}.nar`]) {
      tried++
      const ex = await exchange(port, requestFor(target, 'GET', 'Expect: 100-continue\r\n'))
      assert.deepEqual(ex.statuses, [target === '/nix-cache-info' ? 200 : 404], `Expect: 100-continue on ${target}`)
    }
  })

  test('garbage on the raw socket gets a 400 or a closed connection, and the server keeps serving', async () => {
    // A fixed-seed generator: the same garbage every run.
    let seed = 0x2545f491
    const next = () => {
      seed ^= seed << 13
      seed ^= seed >>> 17
      seed ^= seed << 5
      return seed >>> 0
    }
    const noise = (n: number) => Buffer.from(Array.from({ length: n }, () => next() & 255))
    const cases: Array<[string, Buffer | string]> = [
      ['TLS ClientHello', Buffer.from('16030100c4010000c00303' + '00'.repeat(64), 'hex')],
      ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      ['SSH banner', 'SSH-2.0-OpenSSH_9.6\r\n'],
      ['only CRLFs', '\r\n\r\n\r\n\r\n'],
      ['no version', 'GET /nix-cache-info HTTP/9.9\r\n\r\n'],
      ['header without colon', 'GET /nix-cache-info HTTP/1.1\r\nHost x\r\n\r\n'],
      ['space in header name', 'GET /nix-cache-info HTTP/1.1\r\nHo st: x\r\n\r\n'],
      ['NUL in header value', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\0y\r\n\r\n'],
      ['CR in header value', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\ry\r\n\r\n'],
      ['Content-Length and Transfer-Encoding', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
      ['two Content-Lengths', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab'],
      ['negative Content-Length', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n'],
      ['huge Content-Length', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n'],
      ['bad chunk size', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
      ['obsolete line folding', 'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n'],
      ['request line only spaces', '   \r\n\r\n'],
      ['a valid request, then garbage', `${requestFor('/nix-cache-info').replace('Connection: close\r\n', '')}\x00\x01\x02garbage\r\n\r\n`],
      ...Array.from({ length: 30 }, (_, i): [string, Buffer] => [`noise #${i}`, noise(1 + (next() % 3000))]),
      ...Array.from({ length: 10 }, (_, i): [string, Buffer] => [`noise after a method #${i}`, Buffer.concat([Buffer.from('GET /'), noise(1 + (next() % 200)), Buffer.from(' HTTP/1.1\r\n\r\n')])]),
    ]
    tried += cases.length
    for (const [what, request] of cases) {
      const ex = await exchange(port, request, { halfClose: true })
      assert.ok(ex.closed, `${what}: the connection was left open`)
      assertNoLeak(ex, what)
      // A request whose head parsed before the garbage (a valid request, then noise; a valid head, then
      // a broken chunked body it does not read) may be answered, unless the parse error cuts its answer
      // short (node's server does, when it is still being answered); the garbage never gets a 2xx.
      const headFirst = what === 'a valid request, then garbage' || what === 'bad chunk size'
      assert.ok(ex.statuses.filter((s) => s < 400).length <= (headFirst ? 1 : 0), `${what}: ${ex.statuses.join(",")}`)
      assert.ok(ex.statuses.every((s) => s < 500), `${what}: ${ex.statuses.join(",")}`)
      await assertStillServing(what)
    }
  })

  test('pipelined requests, idle connections and abandoned requests do not stop the server', async () => {
    const h = hashPartOf(app)
    // 50 pipelined requests on one connection, all answered in order.
    const pipelined = Array.from({ length: 50 }, (_, i) => `GET ${i % 2 ? '/nix-cache-info' : `/${h}.narinfo`} HTTP/1.1\r\nHost: x\r\n${i === 49 ? 'Connection: close\r\n' : ''}\r\n`).join('')
    const ex = await exchange(port, pipelined)
    assert.equal(ex.statuses.length, 50)
    assert.ok(ex.statuses.every((s) => s === 200))
    // 200 idle connections and 50 half-sent requests, held open while normal requests are served.
    const sockets = await Promise.all(
      Array.from({ length: 250 }, (_, i) => {
        const s = connect(port, '127.0.0.1')
        s.on('error', () => undefined)
        return new Promise<typeof s>((resolve) => s.once('connect', () => resolve(s))).then((sock) => {
          if (i >= 200) sock.write(`GET /${h}.narinfo HTTP/1.1\r\nHost: x\r\nX-Partial: `)
          return sock
        })
      }),
    )
    tried += 251
    try {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${narthex.url}${narUrl}`)
        assert.equal(res.status, 200)
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(narBytes))
      }
    } finally {
      for (const s of sockets) s.destroy()
    }
    // A NAR request abandoned mid-body.
    const abandoned = connect(port, '127.0.0.1')
    abandoned.on('error', () => undefined)
    await new Promise<void>((resolve) => abandoned.once('connect', () => resolve()))
    abandoned.write(requestFor(narUrl))
    await new Promise<void>((resolve) => abandoned.once('data', () => resolve()))
    abandoned.destroy()
    await assertStillServing('an abandoned NAR download')
  })

  test('afterwards: narthex still serves the stored path correctly and logged no unexpected error', async (t) => {
    const res = await fetch(`${narthex.url}${narUrl}`)
    assert.equal(res.status, 200)
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(narBytes))
    assert.deepEqual(narthex.logged('unexpected error'), [])
    t.diagnostic(`bad inputs tried: ${tried}`)
  })
})

for (const workers of [0, 2]) describe(`hostile credentials against a private narthex (${workers === 0 ? 'one process' : `${workers} worker processes`})`, { skip }, () => {
  const TOKEN = `read-token-${randomBytes(12).toString('hex')}`
  let upstream: StaticServer
  let narthex: NarthexProcess
  let port: number
  let narUrl: string

  before(async () => {
    upstream = await startStaticServer(cacheDir)
    const tokenFile = join(nix.dir, `hostile-token-${workers}`)
    await writeFile(tokenFile, TOKEN, { mode: 0o600 })
    narthex = await NarthexProcess.start({
      upstreams: [{ name: 'up', url: upstream.url, publicKeys: [key.publicKey], timeoutMs: 2000, retries: 0 }],
      rules: [{ match: '*', upstreams: ['up'], minSignatures: 1 }],
      access: { read: 'tokens', tokens: [{ name: 'reader', secretFile: tokenFile, scopes: ['read'] }] },
      workers,
      log: { level: 'info' },
    })
    port = Number(new URL(narthex.url).port)
    const res = await fetch(`${narthex.url}/${hashPartOf(app)}.narinfo`, { headers: { authorization: `Bearer ${TOKEN}` } })
    assert.equal(res.status, 200)
    narUrl = `/${parseNarInfo(await res.text()).url}`
  })

  after(async () => {
    await narthex?.cleanup()
    await upstream?.close()
  })

  /** The response without its Date header: what must be byte-identical between refusals. */
  const normalised = (ex: Exchange) => ex.raw.toString('latin1').replace(/^date: [^\r\n]*\r\n/im, '')

  test('missing, malformed, overlong, wrong-scheme and wrong tokens all get the same 401, for paths that exist and that do not', async () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64')
    const wrong = `read-token-${randomBytes(12).toString('hex')}`
    const headers: Array<[string, string]> = [
      ['no Authorization', ''],
      ['empty Authorization', 'Authorization: \r\n'],
      ['Bearer without a token', 'Authorization: Bearer\r\n'],
      ['Bearer with a wrong token of the right length', `Authorization: Bearer ${wrong}\r\n`],
      ['Bearer with the token plus one character', `Authorization: Bearer ${TOKEN}x\r\n`],
      ['Bearer with a prefix of the token', `Authorization: Bearer ${TOKEN.slice(0, -1)}\r\n`],
      ['Basic with a wrong password', `Authorization: Basic ${b64(`nix:${wrong}`)}\r\n`],
      ['Basic with the token as the login', `Authorization: Basic ${b64(`${TOKEN}:`)}\r\n`],
      ['Basic without a colon', `Authorization: Basic ${b64(TOKEN)}\r\n`],
      ['Basic that is not base64', `Authorization: Basic ${TOKEN}!!\r\n`],
      ['Basic with trailing garbage', `Authorization: Basic ${b64(`nix:${TOKEN}`)} extra\r\n`],
      ['the token with no scheme', `Authorization: ${TOKEN}\r\n`],
      ['Digest scheme', `Authorization: Digest username="nix", response="${TOKEN}"\r\n`],
      ['Negotiate scheme', `Authorization: Negotiate ${b64(TOKEN)}\r\n`],
      ['Token scheme', `Authorization: Token ${TOKEN}\r\n`],
      ['a 5 KiB bearer token', `Authorization: Bearer ${'a'.repeat(5 * 1024)}\r\n`],
      ['a 12 KiB Basic header ending in the token', `Authorization: Basic ${b64(`${'x'.repeat(9 * 1024)}:${TOKEN}`)}\r\n`],
      ['the token in another header', `X-Authorization: Bearer ${TOKEN}\r\nProxy-Authorization: Bearer ${TOKEN}\r\n`],
    ]
    const targets = [`/${hashPartOf(app)}.narinfo`, `/${hashPartOf(unknown)}.narinfo`, narUrl, `/nar/${'1'.repeat(52)}.nar.xz`, '/nix-cache-info', '/', '/metrics', '/no-such-route']
    let reference: string | undefined
    for (const target of targets) {
      for (const method of ['GET', 'HEAD']) {
        for (const [what, extra] of headers) {
          const ex = await exchange(port, requestFor(target, method, extra))
          assert.deepEqual(ex.statuses, [401], `${method} ${target} with ${what}: got ${ex.statuses.join(",")}`)
          assert.ok(ex.closed, `${what}: the connection was left open`)
          const text = normalised(ex)
          if (method === 'GET') {
            reference ??= text
            assert.equal(text, reference, `${method} ${target} with ${what} was answered differently from a request without credentials`)
          }
          assert.ok(!ex.raw.includes(TOKEN), `${what}: the response contains the token`)
        }
      }
    }
    assert.match(reference!, /^www-authenticate: Basic realm="narthex"\r$/im)
    // The same credentials that were refused above are never logged, nor is the real token.
    const logs = narthex.logs.map((l) => JSON.stringify(l)).join('\n')
    assert.ok(!logs.includes(TOKEN) && !logs.includes(wrong), 'a presented token is in the log')
  })

  test('the right token still works after all that, as Basic password and as Bearer; /healthz needs none', async () => {
    const basic = `Authorization: Basic ${Buffer.from(`anyone:${TOKEN}`).toString('base64')}\r\n`
    assert.deepEqual((await exchange(port, requestFor(`/${hashPartOf(app)}.narinfo`, 'GET', basic))).statuses, [200])
    assert.deepEqual((await exchange(port, requestFor(narUrl, 'GET', `Authorization: Bearer ${TOKEN}\r\n`))).statuses, [200])
    assert.deepEqual((await exchange(port, requestFor(`/${hashPartOf(unknown)}.narinfo`, 'GET', basic))).statuses, [404])
    assert.deepEqual((await exchange(port, requestFor('/healthz'))).statuses, [200])
    assert.deepEqual(narthex.logged('unexpected error'), [])
  })
})
