import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compilePolicy, countsAsTrusted, denyReason, isDenied, withoutDeniedKeys, type PolicyInput } from '../../src/policy/index.js'
import { formatPublicKey, generateSecretKey, parsePublicKey, toPublicKey } from '../../src/protocol/index.js'

const HASH = 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr'
const OTHER = '00bgd045z0d4icpbc2yyz4gx48ak44la'
const pub = (name: string) => formatPublicKey(toPublicKey(generateSecretKey(name)))
const nixos = pub('nixos-1')
const third = pub('third-1')
const leaked = pub('leaked-1')
// The leaked key's bytes under another name: a signature labelled `alias-1` would verify.
const alias = `alias-1:${leaked.slice(leaked.indexOf(':') + 1)}`

const base: PolicyInput = {
  upstreams: [
    { name: 'nixos', publicKeys: [nixos] },
    { name: 'third', publicKeys: [third, leaked] },
  ],
  rules: [
    { match: ['blocked-*'], upstreams: [] },
    { match: ['strict-*'], upstreams: ['nixos', 'third'], onConflict: 'refuse' },
    { match: ['aliased-*'], upstreams: ['third'], trustedKeys: [alias, third] },
    { match: ['*'], upstreams: ['nixos', 'third'], minSignatures: 2 },
  ],
}

test('compiled rules: defaults for minSignatures and onConflict; a deny rule needs no minSignatures', () => {
  const rows: Array<[index: number, minSignatures: number, onConflict: string]> = [
    [0, 0, 'priority'],
    [1, 1, 'refuse'],
    [2, 1, 'priority'],
    [3, 2, 'priority'],
  ]
  const policy = compilePolicy(base)
  for (const [index, minSignatures, onConflict] of rows) {
    const r = policy.rules[index]
    assert.deepEqual([r.minSignatures, r.onConflict], [minSignatures, onConflict], `rules[${index}]`)
  }
  assert.deepEqual(policy.rules[0].upstreams, [])
  // A minSignatures written on a deny rule means nothing.
  const written = compilePolicy({ ...base, rules: [{ match: ['*'], upstreams: [], minSignatures: 3 }] })
  assert.equal(written.rules[0].minSignatures, 0)
})

test('deny.keys: removed from every rule, by key bytes (under any name) or by name', () => {
  const rows: Array<[why: string, keys: string[], rule: number, expected: string[]]> = [
    ['nothing denied', [], 3, ['nixos-1', 'third-1', 'leaked-1']],
    ['a full key', [leaked], 3, ['nixos-1', 'third-1']],
    ['a full key denies its bytes under another name too', [leaked], 2, ['third-1']],
    ['a bare name', ['leaked-1'], 3, ['nixos-1', 'third-1']],
    ['a bare name leaves the same bytes under another name', ['leaked-1'], 2, ['alias-1', 'third-1']],
    ['a key of a name no rule uses changes nothing', ['unused-1'], 3, ['nixos-1', 'third-1', 'leaked-1']],
    ['several', [nixos, 'third-1'], 3, ['leaked-1']],
  ]
  for (const [why, keys, rule, expected] of rows) {
    const policy = compilePolicy({ ...base, deny: { keys } })
    assert.deepEqual(policy.rules[rule].trustedKeys.map((k) => k.name), expected, why)
  }
})

test('countsAsTrusted and withoutDeniedKeys filter push and import keys the same way', () => {
  const policy = compilePolicy({ ...base, deny: { keys: [leaked, 'third-1'] } })
  const rows: Array<[string, boolean]> = [
    [nixos, true],
    [third, false],
    [leaked, false],
    [alias, false],
  ]
  for (const [key, counts] of rows) assert.equal(countsAsTrusted(policy, parsePublicKey(key)), counts, key)
  assert.deepEqual(withoutDeniedKeys(policy, [nixos, third, leaked, alias].map(parsePublicKey)).map(formatPublicKey), [nixos])
  const open = compilePolicy(base)
  assert.equal(withoutDeniedKeys(open, [nixos, third].map(parsePublicKey)).length, 2)
})

test('deny.paths: a store path or a hash part denies the hash part, whatever name is claimed', () => {
  const policy = compilePolicy({ ...base, deny: { paths: [`/nix/store/${HASH}-bad-1.0`, OTHER] } })
  const rows: Array<[hashPart: string, name: string | undefined, denied: boolean]> = [
    [HASH, 'bad-1.0', true],
    [HASH, 'renamed', true],
    [HASH, undefined, true],
    [OTHER, 'anything', true],
    [OTHER, undefined, true],
    ['0c0bgd045z0d4icpbc2yyz4gx48ak44l', 'bad-1.0', false],
  ]
  for (const [hashPart, name, denied] of rows) {
    assert.equal(isDenied(policy, hashPart, name), denied, `${hashPart}-${name}`)
    assert.equal(denyReason(policy, hashPart, name) !== undefined, denied, `${hashPart}-${name}`)
  }
  assert.match(denyReason(policy, HASH, 'renamed')!, new RegExp(`/nix/store/${HASH}-renamed is denied \\(deny.paths lists /nix/store/${HASH}-bad-1.0\\)`))
  assert.match(denyReason(policy, OTHER)!, new RegExp(`the hash part ${OTHER}`))
  assert.equal(isDenied(compilePolicy(base), HASH, 'bad-1.0'), false)
})

test('a malformed deny entry is refused when compiling (the config validation names the field first)', () => {
  assert.throws(() => compilePolicy({ ...base, deny: { keys: ['leaked-1:not-base64'] } }), { code: 'KEY_INVALID' })
  assert.throws(() => compilePolicy({ ...base, deny: { paths: ['/nix/store/short'] } }), { code: 'STORE_PATH_INVALID' })
  assert.throws(() => compilePolicy({ ...base, deny: { paths: ['short'] } }), { code: 'STORE_PATH_INVALID' })
})
