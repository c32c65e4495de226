/**
 * Keys and signatures interoperate with the real `nix` both ways.
 */
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, test } from 'node:test'
import { formatNarInfo, parseNarInfo, parsePublicKey, parseSecretKey, signNarInfo, validSigners } from '../../src/protocol/index.js'
import { BIN } from '../helpers/narthex.js'
import { NixCommandError, NixEnv, nixSkipReason } from '../helpers/nix.js'

const skip = nixSkipReason()
const run = promisify(execFile)

describe('keys and signatures with the real nix', { skip }, () => {
  let nix: NixEnv
  let paths: Record<string, string>

  before(async () => {
    nix = await NixEnv.create()
    paths = await nix.buildClosure({ base: {}, top: { deps: ['base'] } })
  })
  after(async () => {
    await nix?.cleanup()
  })

  test('narthex keygen makes a key nix understands, and narinfos narthex signs with it are accepted by nix', async () => {
    const { stdout: secret, stderr: publicKey } = await run(process.execPath, [BIN, 'keygen', 'interop-1'])
    assert.match(secret.trim(), /^interop-1:[A-Za-z0-9+/]{86}==$/)
    const { stdout: nixPublic } = await nix.run('nix', ['key', 'convert-secret-to-public'], { input: secret.trim() })
    assert.equal(nixPublic.trim(), publicKey.trim(), 'nix derives the same public key')
    const ours = spawnSync(process.execPath, [BIN, 'keygen', '--public'], { input: secret, timeout: 10_000 })
    assert.equal(ours.status, 0)
    assert.equal(ours.stdout.toString().trim(), publicKey.trim())

    // An unsigned cache, re-signed by narthex's code with the keygen key only.
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.top])
    const key = parseSecretKey(secret)
    for (const f of (await readdir(dir)).filter((x) => x.endsWith('.narinfo'))) {
      const info = parseNarInfo(await readFile(join(dir, f), 'utf8'))
      await writeFile(join(dir, f), formatNarInfo(signNarInfo({ ...info, sigs: [] }, key)))
    }
    const { store } = await nix.substitute(`file://${dir}`, [paths.top], [publicKey.trim()])
    await nix.verifyPath(store, paths.top)
    // And nix refuses the same cache under another key: the acceptance above is not vacuous.
    const other = await nix.genKey('other-1')
    await assert.rejects(nix.substitute(`file://${dir}`, [paths.top], [other.publicKey]), NixCommandError)
  })

  test('signatures made by nix store sign verify in narthex; other keys and altered fields do not', async () => {
    const k = await nix.genKey('nixsigned-1')
    await nix.sign(k.secretFile, [paths.top])
    const dir = nix.freshDir('cache')
    await nix.copyToCache(dir, [paths.top])
    for (const f of (await readdir(dir)).filter((x) => x.endsWith('.narinfo'))) {
      const info = parseNarInfo(await readFile(join(dir, f), 'utf8'))
      assert.deepEqual(validSigners(info, [parsePublicKey(k.publicKey)]), ['nixsigned-1'], f)
      assert.deepEqual(validSigners({ ...info, narSize: info.narSize + 1 }, [parsePublicKey(k.publicKey)]), [], f)
      const stranger = await nix.genKey('nixsigned-1')
      assert.deepEqual(validSigners(info, [parsePublicKey(stranger.publicKey)]), [], 'same name, other key')
    }
  })
})
