import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compilePolicy, decide, ruleFor, upstreamsToAsk, type Policy, type PolicyInput, type UpstreamAnswer } from '../../src/policy/index.js'
import {
  encodeNix32,
  formatNixHash,
  formatPublicKey,
  signFingerprint,
  fingerprintNarInfo,
  generateSecretKey,
  signNarInfo,
  toPublicKey,
  type NarInfo,
  type SecretKey,
} from '../../src/protocol/index.js'

const HASH = 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr'
const PIN = '00bgd045z0d4icpbc2yyz4gx48ak44la'
const DENIED_HASH = '0c0bgd045z0d4icpbc2yyz4gx48ak44l'
const keys: Record<string, SecretKey> = {
  nixos: generateSecretKey('nixos-1'),
  corp: generateSecretKey('corp-1'),
  third: generateSecretKey('third-1'),
  rogue: generateSecretKey('rogue-1'),
}
const pub = (k: string) => formatPublicKey(toPublicKey(keys[k]))

const input: PolicyInput = {
  upstreams: [
    { name: 'nixos', publicKeys: [pub('nixos')] },
    { name: 'corp', publicKeys: [pub('corp')] },
    { name: 'third', publicKeys: [pub('third')] },
  ],
  rules: [
    { match: [PIN], upstreams: ['nixos', 'third'], minSignatures: 2 },
    { match: ['corp-*'], upstreams: ['corp'], minSignatures: 1 },
    // A deny rule needs no minSignatures.
    { match: ['blocked-*'], upstreams: [] },
    { match: ['unsigned-*'], upstreams: ['corp'], minSignatures: 0 },
    { match: ['*-source', 'quorum-*'], upstreams: ['nixos', 'third'], minSignatures: 2 },
    { match: ['strict-*'], upstreams: ['nixos', 'third'], minSignatures: 1, onConflict: 'refuse' },
    { match: ['trio-*'], upstreams: ['nixos', 'third', 'corp'], minSignatures: 2 },
    { match: ['open-*'], upstreams: ['nixos', 'third'], minSignatures: 0 },
    { match: ['*'], upstreams: ['nixos', 'third'] },
  ],
}
const policy = compilePolicy(input)
const policies: Record<string, Policy> = {
  default: policy,
  denyKey: compilePolicy({ ...input, deny: { keys: [pub('third')], paths: [DENIED_HASH] } }),
  denyName: compilePolicy({ ...input, deny: { keys: ['third-1'] } }),
}

test('rule matcher: first match wins, globs on the name, pins by hash part and full path', () => {
  const rows: Array<[string, string | undefined, number | undefined]> = [
    [HASH, 'corp-tool-1.0', 1],
    [HASH, 'blocked-thing', 2],
    [HASH, 'unsigned-x', 3],
    [HASH, 'nixpkgs-source', 4],
    [HASH, 'quorum-lib', 4],
    [HASH, 'strict-x', 5],
    [HASH, 'trio-x', 6],
    [HASH, 'open-x', 7],
    [HASH, 'hello-2.12', 8],
    [HASH, '.hidden', 8],
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
  assert.deepEqual(policy.rules[8].trustedKeys.map((k) => k.name), ['nixos-1', 'third-1'])
  const override = compilePolicy({ upstreams: input.upstreams, rules: [{ match: ['*'], upstreams: ['nixos', 'third'], minSignatures: 1, trustedKeys: [pub('rogue')] }] })
  assert.deepEqual(override.rules[0].trustedKeys.map((k) => k.name), ['rogue-1'])
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
  for (const s of signers) {
    if (!s.endsWith('!')) i = signNarInfo(i, keys[s])
    // `key!`: a signature under that key's name over other signed fields, as when a NarSize is damaged in transit.
    else i = { ...i, sigs: [...i.sigs, signFingerprint(fingerprintNarInfo({ ...i, narSize: i.narSize + 1 }), keys[s.slice(0, -1)])] }
  }
  return i
}

type Row = {
  why: string
  policy?: keyof typeof policies
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
  { why: 'a deny rule (no upstreams, no minSignatures) refuses', name: 'blocked-x', answers: [['nixos', [1, ['nixos']]]], expect: 'refuse DENIED_BY_RULE' },

  // Priority (the default): disagreement is recorded, the rule's order decides.
  { why: 'priority: signed answers disagree; the first upstream supplies it, the other is a conflict', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'admit nixos [nixos-1] conflicts third' },
  { why: 'priority: a signed lower-priority dissent does not wait for, or deny, the primary', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third', 'nixos']]]], expect: 'admit nixos [nixos-1] conflicts third' },
  { why: 'an unsigned dissent is not a conflict', answers: [['nixos', [1, ['nixos']]], ['third', [2, []]]], expect: 'admit nixos [nixos-1]' },
  { why: 'an unsigned answer ahead proves nothing: the next validly signed one supplies the path', answers: [['nixos', [1, []]], ['third', [2, ['third']]]], expect: 'admit third [third-1]' },
  { why: 'an answer ahead signed only by an untrusted key proves nothing either', answers: [['nixos', [1, ['rogue']]], ['third', [2, ['third']]]], expect: 'admit third [third-1]' },
  { why: 'a damaged answer ahead (trusted name, signature fails) and another signed copy: 503, not the lower copy', answers: [['nixos', [1, ['nixos!']]], ['third', [2, ['third']]]], expect: 'unavailable nixos' },
  { why: 'a damaged answer ahead with the fingerprint a later upstream validly signs: admitted', answers: [['nixos', [1, ['nixos!']]], ['third', [1, ['third']]]], expect: 'admit nixos [third-1]' },
  { why: 'a damaged answer and nothing valid: not enough signatures', answers: [['nixos', [1, ['nixos!']]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'down ahead of the only valid answer, an unsigned one between: 503', name: 'trio-x', answers: [['nixos', 'unavailable'], ['third', [1, []]], ['corp', [2, ['corp', 'third']]]], expect: 'unavailable nixos' },
  { why: 'minSignatures 0: the first answer supplies it, every other fingerprint is a conflict', name: 'open-x', answers: [['nixos', [1, []]], ['third', [2, []]]], expect: 'admit nixos [] conflicts third' },

  // onConflict: refuse keeps the strict behaviour.
  { why: 'refuse: signed answers disagree', name: 'strict-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'refuse CONFLICT' },
  { why: 'refuse: agreement is admitted', name: 'strict-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]]], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'refuse: an unsigned dissent is still not a conflict', name: 'strict-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, []]]], expect: 'admit nixos [nixos-1]' },

  // Quorum.
  { why: 'quorum met across upstreams', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]]], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'quorum met on one narinfo', name: 'quorum-x', answers: [['nixos', [1, ['nixos', 'third']]], ['third', 'absent']], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'quorum not met: one of two keys', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['nixos']]]], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'quorum not met, the other upstream down: 503', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', 'unavailable']], expect: 'unavailable third' },
  { why: '2-of-2 whose caches disagree: CONFLICT, though onConflict is priority', name: 'quorum-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'refuse CONFLICT' },
  { why: 'quorum: a damaged answer ahead, another fingerprint meets the quorum: 503', name: 'quorum-x', answers: [['nixos', [1, ['nixos!']]], ['third', [2, ['third', 'nixos']]]], expect: 'unavailable nixos' },
  { why: 'quorum: an unsigned answer ahead is passed over', name: 'quorum-x', answers: [['nixos', [1, []]], ['third', [2, ['third', 'nixos']]]], expect: 'admit third [nixos-1,third-1]' },
  { why: '2-of-3 where the two lower ones agree', name: 'trio-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]], ['corp', [2, ['corp']]]], expect: 'admit third [corp-1,third-1] conflicts nixos' },
  { why: '2-of-3 where the two higher ones agree', name: 'trio-x', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]], ['corp', [2, ['corp']]]], expect: 'admit nixos [nixos-1,third-1] conflicts corp' },
  { why: '2-of-3, all three disagree', name: 'trio-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]], ['corp', [3, ['corp']]]], expect: 'refuse CONFLICT' },
  { why: '2-of-3, two disagree and the third could not be asked: 503', name: 'trio-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]], ['corp', 'unavailable']], expect: 'unavailable corp' },
  { why: '2-of-3, the primary down while the others agree: 503 (shadowing)', name: 'trio-x', answers: [['nixos', 'unavailable'], ['third', [2, ['third']]], ['corp', [2, ['corp']]]], expect: 'unavailable nixos' },
  { why: '2-of-3, two fingerprints reach the quorum: the higher-priority one wins', name: 'trio-x', answers: [['nixos', [1, ['nixos', 'corp']]], ['third', [2, ['third', 'nixos']]], ['corp', 'absent']], expect: 'admit nixos [corp-1,nixos-1] conflicts third' },

  // The first-seen pin.
  { why: 'conflict with the NarHash admitted before', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], remembered: 9, expect: 'refuse CONFLICT_WITH_ADMITTED' },
  { why: 'same NarHash as admitted before', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], remembered: 1, expect: 'admit nixos [nixos-1]' },
  { why: 'pin: the remembered NarHash validly offered by a lower upstream is admitted from there', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], remembered: 2, expect: 'admit third [third-1] conflicts nixos' },
  { why: 'pin: the remembered NarHash offered unsigned does not count', answers: [['nixos', [1, ['nixos']]], ['third', [2, []]]], remembered: 2, expect: 'refuse CONFLICT_WITH_ADMITTED' },
  { why: 'pin: a damaged answer ahead changes nothing when the pin decides', answers: [['nixos', [1, ['nixos!']]], ['third', [2, ['third']]]], remembered: 2, expect: 'admit third [third-1]' },
  { why: 'pin with quorum: the remembered copy must reach the quorum itself', name: 'quorum-x', answers: [['nixos', [1, ['nixos', 'third']]], ['third', [2, ['third', 'nixos']]]], remembered: 2, expect: 'admit third [nixos-1,third-1] conflicts nixos' },
  { why: 'pin under onConflict refuse: the disagreement refuses first', name: 'strict-x', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], remembered: 2, expect: 'refuse CONFLICT' },
  { why: 'pin under onConflict refuse, no disagreement', name: 'strict-x', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], remembered: 2, expect: 'refuse CONFLICT_WITH_ADMITTED' },

  { why: 'upstreams name the hash part differently', answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third'], 'other-name']]], expect: 'refuse CONFLICT' },
  { why: 'pinned hash needs two keys', hash: PIN, answers: [['nixos', [1, ['nixos']]], ['third', [1, ['third']]]], expect: 'admit nixos [nixos-1,third-1]' },
  { why: 'pinned hash with one key', hash: PIN, answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },

  // Deny lists.
  { why: 'deny.keys (full key): a path signed only by it is refused', policy: 'denyKey', answers: [['nixos', 'absent'], ['third', [1, ['third']]]], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'deny.keys (key name): the same', policy: 'denyName', answers: [['nixos', 'absent'], ['third', [1, ['third']]]], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'deny.keys: an answer signed by a denied key is no conflict', policy: 'denyKey', answers: [['nixos', [1, ['nixos']]], ['third', [2, ['third']]]], expect: 'admit nixos [nixos-1]' },
  { why: 'deny.keys: a denied signature does not count toward a quorum', policy: 'denyName', name: 'quorum-x', answers: [['nixos', [1, ['nixos', 'third']]], ['third', 'absent']], expect: 'refuse INSUFFICIENT_SIGNATURES' },
  { why: 'deny.keys: other keys still count', policy: 'denyKey', answers: [['nixos', [1, ['nixos', 'third']]], ['third', 'absent']], expect: 'admit nixos [nixos-1]' },
  { why: 'deny.paths: refused whatever the rule and the signatures say', policy: 'denyKey', hash: DENIED_HASH, answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], expect: 'refuse DENIED' },
  { why: 'deny.paths: refused even when no upstream has it', policy: 'denyKey', hash: DENIED_HASH, answers: [['nixos', 'absent'], ['third', 'unavailable']], expect: 'refuse DENIED' },
  { why: 'deny.paths: another hash part is not affected', policy: 'denyKey', answers: [['nixos', [1, ['nixos']]], ['third', 'absent']], expect: 'admit nixos [nixos-1]' },
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
    const d = decide(policies[row.policy ?? 'default'], hash, answers, remembered)
    const got =
      d.kind === 'admit'
        ? `admit ${d.upstream} [${d.signers.join(',')}]${d.conflicts.length ? ` conflicts ${d.conflicts.map((c) => c.upstream).join(',')}` : ''}`
        : d.kind === 'refuse'
          ? `refuse ${d.reason}`
          : d.kind === 'unavailable'
            ? `unavailable ${d.upstreams.join(',')}`
            : 'absent'
    assert.equal(got, row.expect, row.why)
    if (d.kind === 'admit') {
      // Only signatures that verify under the rule's trusted keys are kept.
      assert.equal(d.info.sigs.length, d.signers.length, row.why)
      assert.equal(d.sources[0].upstream, d.upstream, row.why)
      assert.equal(d.narHash, formatNixHash(d.info.narHash), row.why)
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

test('a recorded conflict names the dissenting upstream, its NarHash and its valid signers', () => {
  const ours = info('hello-1.0', 1, ['nixos'])
  const theirs = info('hello-1.0', 2, ['third', 'rogue'])
  const answers = new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: ours }],
    ['third', { upstream: 'third', kind: 'present', info: theirs }],
  ])
  const d = decide(policy, HASH, answers)
  assert.equal(d.kind, 'admit')
  if (d.kind !== 'admit') return
  assert.deepEqual([d.upstream, d.narHash], ['nixos', formatNixHash(ours.narHash)])
  assert.deepEqual(d.sources.map((s) => s.upstream), ['nixos'], 'the dissenting copy is no source')
  assert.deepEqual(d.conflicts, [{ upstream: 'third', narHash: formatNixHash(theirs.narHash), signers: ['third-1'] }])

  // onConflict: refuse lists both answers.
  const strict = (i: NarInfo): NarInfo => signNarInfo({ ...i, storePath: { hashPart: HASH, name: 'strict-x' }, sigs: [] }, keys[i === ours ? 'nixos' : 'third'])
  const refused = decide(policy, HASH, new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: strict(ours) }],
    ['third', { upstream: 'third', kind: 'present', info: strict(theirs) }],
  ]))
  assert.equal(refused.kind, 'refuse')
  if (refused.kind !== 'refuse') return
  assert.equal(refused.reason, 'CONFLICT')
  assert.deepEqual(refused.narHashes, [formatNixHash(ours.narHash), formatNixHash(theirs.narHash)])
  assert.deepEqual(refused.conflicts?.map((c) => [c.upstream, c.signers]), [['nixos', ['nixos-1']], ['third', ['third-1']]])
  assert.match(refused.message, /nixos: sha256:\S+ \(nixos-1\); third: sha256:\S+ \(third-1\)/)
})

test('a 2-of-2 refusal for disagreement lists both signed answers', () => {
  const d = decide(policy, HASH, new Map<string, UpstreamAnswer>([
    ['nixos', { upstream: 'nixos', kind: 'present', info: info('quorum-x', 1, ['nixos']) }],
    ['third', { upstream: 'third', kind: 'present', info: info('quorum-x', 2, ['third']) }],
  ]))
  assert.equal(d.kind === 'refuse' && d.reason, 'CONFLICT')
  if (d.kind !== 'refuse') return
  assert.deepEqual(d.conflicts?.map((c) => c.upstream), ['nixos', 'third'])
  assert.equal(d.narHashes.length, 2)
})
