import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compilePolicy, decide, ruleFor, upstreamsToAsk, type PolicyInput, type UpstreamAnswer } from '../../src/policy/index.js'
import {
  encodeNix32,
  formatPublicKey,
  generateSecretKey,
  signNarInfo,
  toPublicKey,
  type NarInfo,
  type SecretKey,
} from '../../src/protocol/index.js'

const HASH = 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr'
const PIN = '00bgd045z0d4icpbc2yyz4gx48ak44la'
const keys: Record<string, SecretKey> = {
  nixos: generateSecretKey('nixos-1'),
  corp: generateSecretKey('corp-1'),
  third: generateSecretKey('third-1'),
  rogue: generateSecretKey('rogue-1'),
}
const pub = (k: string) => formatPublicKey(toPublicKey(keys[k]!))

const input: PolicyInput = {
  upstreams: [
    { name: 'nixos', publicKeys: [pub('nixos')] },
    { name: 'corp', publicKeys: [pub('corp')] },
    { name: 'third', publicKeys: [pub('third')] },
  ],
  rules: [
    { match: [PIN], upstreams: ['nixos', 'third'], minSignatures: 2 },
    { match: ['corp-*'], upstreams: ['corp'], minSignatures: 1 },
    { match: ['blocked-*'], upstreams: [], minSignatures: 1 },
    { match: ['unsigned-*'], upstreams: ['corp'], minSignatures: 0 },
    { match: ['*-source', 'quorum-*'], upstreams: ['nixos', 'third'], minSignatures: 2 },
    { match: ['*'], upstreams: ['nixos', 'third'], minSignatures: 1 },
  ],
}
const policy = compilePolicy(input)

test('rule matcher: first match wins, globs on the name, pins by hash part and full path', () => {
  const rows: Array<[string, string | undefined, number | undefined]> = [
    [HASH, 'corp-tool-1.0', 1],
    [HASH, 'blocked-thing', 2],
    [HASH, 'unsigned-x', 3],
    [HASH, 'nixpkgs-source', 4],
    [HASH, 'quorum-lib', 4],
    [HASH, 'hello-2.12', 5],
    [HASH, '.hidden', 5],
    [PIN, 'corp-anything', 0],
    [PIN, undefined, 0],
    [HASH, undefined, undefined],
  ]
  for (const [hash, name, expected] of rows) {
    assert.equal(ruleFor(policy, hash, name)?.index, expected, `${hash}-${name}`)
  }
  const byPath = compilePolicy({ upstreams: input.upstreams, rules: [{ match: [`/nix/store/${HASH}-curl`], upstreams: ['nixos'], minSignatures: 1 }] })
  assert.equal(ruleFor(byPath, HASH, 'curl')?.index, 0)
  assert.equal(ruleFor(byPath, HASH, 'other'), undefined, 'a path pin matches its own name only')
  assert.equal(ruleFor(byPath, HASH, undefined)?.index, 0)
  assert.deepEqual(upstreamsToAsk(policy, PIN), ['nixos', 'third'])
  assert.deepEqual(upstreamsToAsk(policy, HASH), ['nixos', 'third', 'corp'])
})

test('default trusted keys are the rule upstreams\' pinned keys; trustedKeys overrides', () => {
  assert.deepEqual(policy.rules[5]!.trustedKeys.map((k) => k.name), ['nixos-1', 'third-1'])
  const override = compilePolicy({ upstreams: input.upstreams, rules: [{ match: ['*'], upstreams: ['nixos', 'third'], minSignatures: 1, trustedKeys: [pub('rogue')] }] })
  assert.deepEqual(override.rules[0]!.trustedKeys.map((k) => k.name), ['rogue-1'])
})

function info(name: string, narByte: number, signers: string[], hash = HASH): NarInfo {
  let i: NarInfo = {
    storePath: { hashPart: hash, name },
    url: `nar/${encodeNix32(Buffer.alloc(32, narByte))}.nar.xz`,
    compression: 'xz',
    narHash: { algorithm: 'sha256', digest: Buffer.alloc(32, narByte) },
    narSize: 1000 + narByte,
    references: [],
    sigs: [],
  }
  for (const s of signers) i = signNarInfo(i, keys[s]!)
  return i
}

type Row = {
  why: string
  name?: string
  hash?: string
  answers: Array<[string, 'absent' | 'unavailable' | [narByte: number, signers: string[], name?: string]]>
  remembered?: number
  expect: string
}

const rows: Row[] = [
  { why: 'primary has it, signed', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], expect: 'admit nixos [nixos-1]' },
  { why: 'all absent', answers: [['nixos', 'absent'], ['third', 'absent'], ['corp', 'absent']], expect: 'absent' },
  { why: 'none answered present and one could not be asked', answers: [['nixos', 'absent'], ['third', 'unavailable'], ['corp', 'absent']], expect: 'unavailable third' },
  { why: 'lower priority used after higher said absent', answers: [['nixos', 'absent'], ['third', [1, ['third']]]], expect: 'admit third [third-1]' },
  { why: 'shadowing: primary unavailable, lower copy NOT used', answers: [['nixos', 'unavailable'], ['third', [1, ['third']]]], expect: 'unavailable nixos' },
  { why: 'a key trusted for the rule may sign any path of it (no name binding)', answers: [['nixos', 'absent'], ['third', [1, ['nixos']]]], expect: 'admit third [nixos-1]' },
  { why: 'unsigned refused', answers: [['nixos', [1, []]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'signed by an untrusted key only', answers: [['nixos', [1, ['rogue']]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'unsigned but a later upstream could not be asked: 503', answers: [['nixos', [1, []]], ['third', 'unavailable']], expect: 'unavailable third' },
  { why: 'unsigned allowed when minSignatures 0', name: 'unsigned-x', answers: [['corp', [1, []]], ['nixos', 'absent'], ['third', 'absent']], expect: 'admit corp []' },
  { why: 'corp path from corp', name: 'corp-x', answers: [['corp', [1, ['corp']]], ['nixos', 'absent'], ['third', 'absent']], expect: 'admit corp [corp-1]' },
  { why: 'corp path offered only by third party', name: 'corp-x', answers: [['corp', 'absent'], ['nixos', 'absent'], ['third', [1, ['third']]]], expect: 'refuse NOT_ELIGIBLE' },
  { why: 'corp path from third while corp is down: 503', name: 'corp-x', answers: [['corp', 'unavailable'], ['nixos', 'absent'], ['third', [1, ['third']]]], expect: 'unavailable corp' },
  { why: 'forged corp path signed by the third party is ignored; corp copy admitted', name: 'corp-x', answers: [['corp', [1, ['corp']]], ['third', [2, ['third']]], ['nixos', 'absent']], expect: 'admit corp [corp-1]' },
  { why: 'denied by an empty rule', name: 'blocked-x', answers: [['nixos', [1, ['nixos']]]], expect: 'refuse DENIED_BY_RULE' },
  { why: 'quorum met across upstreams', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]]], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'quorum met on one narinfo', name: 'quorum-x', answers: [['nixos', [1, ['nixos', 'third']]], ['third', 'absent']], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'quorum not met: one of two keys', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['nixos']]]], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'quorum not met, the other upstream down: 503', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', 'unavailable']], expect: 'unavailable third' },
  { why: 'quorum: a signature over another NarHash does not count, it conflicts', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'refuse CONFLICT' },
  { why: 'conflict between signed answers', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'refuse CONFLICT' },
  { why: 'a higher-priority answer with no valid signature and a signed lower one: 503, not a conflict', answers: [['nixos', [1, ['rogue']]], ['third', [2, ['third']]]], expect: 'unavailable nixos' },
  { why: 'the same with quorum: 503', name: 'quorum-x', answers: [['nixos', [1, []]], ['third', [2, ['third', 'nixos']]]], expect: 'unavailable nixos' },
  { why: 'an unsigned dissent is not a conflict', answers: [['nixos', [1, ['nixos']]], ['third', [2, []]]], expect: 'admit nixos [nixos-1]' },
  { why: 'conflict with the NarHash admitted before', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], remembered: 9, expect: 'refuse CONFLICT_WITH_ADMITTED' },
  { why: 'same NarHash as admitted before', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], remembered: 1, expect: 'admit nixos [nixos-1]' },
  { why: 'upstreams name the hash part differently', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third'], 'other-name']]], expect: 'refuse CONFLICT' },
  { why: 'pinned hash needs two keys', hash: PIN, answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]]], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'pinned hash with one key', hash: PIN, answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },
]

test('decision table', () => {
  for (const row of rows) {
    const hash = row.hash ?? HASH
    const answers = new Map<string, UpstreamAnswer>(
      row.answers.map(([u, a]) => [
        u,
        a === 'absent'
          ? { upstream: u, kind: 'absent' }
          : a === 'unavailable'
            ? { upstream: u, kind: 'unavailable', reason: 'test' }
            : { upstream: u, kind: 'present', info: info(a[2] ?? row.name ?? 'hello-1.0', a[0], a[1], hash) },
      ]),
    )
    const remembered = row.remembered === undefined ? undefined : { algorithm: 'sha256' as const, digest: Buffer.alloc(32, row.remembered) }
    const d = decide(policy, hash, answers, remembered)
    const got =
      d.kind === 'admit'
        ? `admit ${d.sources[0]!.upstream} [${d.signers.join(',')}]`
        : d.kind === 'refuse'
          ? `refuse ${d.reason}`
          : d.kind === 'unavailable'
            ? `unavailable ${d.upstreams.join(',')}`
            : 'absent'
    assert.equal(got, row.expect, row.why)
    if (d.kind === 'admit') {
      // Only signatures that verify under the rule's trusted keys are kept.
      assert.equal(d.info.sigs.length, d.signers.length, row.why)
    }
  }
})

test('an admitted quorum lists every source offering the same fingerprint, in rule order', () => {
  const answers = new Map<string, UpstreamAnswer>([
    ['third', { upstream: 'third', kind: 'present', info: info('quorum-x', 1, ['third']) }],
    ['nixos', { upstream: 'nixos', kind: 'present', info: info('quorum-x', 1, ['nixos']) }],
  ])
  const d = decide(policy, HASH, answers)
  assert.equal(d.kind, 'admit')
  if (d.kind === 'admit') assert.deepEqual(d.sources.map((s) => s.upstream), ['nixos', 'third'])
})

test('unsigned fields come from the first source whose URL and Compression agree', () => {
  // nixos's Compression line was damaged (Nix's default bzip2), its URL still ends in .nar.xz.
  const damaged: NarInfo = { ...info('hello-1.0', 1, ['nixos']), compression: 'bzip2', fileSize: 7 }
  const intact: NarInfo = { ...info('hello-1.0', 1, ['third']), url: 'nar/intact.nar.xz', fileSize: 99 }
  const d = decide(policy, HASH, new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: damaged }],
    ['third', { upstream: 'third', kind: 'present', info: intact }],
  ]))
  assert.equal(d.kind, 'admit')
  if (d.kind !== 'admit') return
  assert.deepEqual([d.info.compression, d.info.url, d.info.fileSize], ['xz', 'nar/intact.nar.xz', 99])
  assert.deepEqual(d.info.narHash, damaged.narHash, 'signed fields are the candidate’s')
  assert.deepEqual(d.sources.map((s) => s.upstream), ['nixos', 'third'], 'sources keep the rule order')
  assert.deepEqual(d.signers, ['nixos-1', 'third-1'])

  // Only an incoherent description, and an upstream that could not be asked: try again later.
  const waiting = decide(policy, HASH, new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: damaged }],
    ['third', { upstream: 'third', kind: 'unavailable', reason: 'test' }],
  ]))
  assert.deepEqual(waiting.kind === 'unavailable' && waiting.upstreams, ['third'])
  // When every upstream answered and none is coherent, the first one's description stands.
  const alone = decide(policy, HASH, new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: damaged }],
    ['third', { upstream: 'third', kind: 'absent' }],
  ]))
  assert.equal(alone.kind === 'admit' && alone.info.compression, 'bzip2')
})
