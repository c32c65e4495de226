/**
 * Writes NARs from an in-memory tree, for parser tests that need malformed
 * archives (unsorted names, bad padding) which real Nix never produces. Tests of
 * well-formed archives use real `nix-store --dump` output as well.
 */

/** A file-system tree in NAR terms. */
export type NarNode =
  | { type: 'regular'; contents: Buffer | string; executable?: boolean }
  | { type: 'symlink'; target: string }
  | { type: 'directory'; entries: Array<[string, NarNode]> }

/** One NAR `str`: u64 LE length, bytes, zero padding to 8. */
export function narString(s: Buffer | string, pad = 0): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'latin1') : s
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(bytes.length))
  const padding = Buffer.alloc((8 - (bytes.length % 8)) % 8, pad)
  return Buffer.concat([len, bytes, padding])
}

function node(n: NarNode): Buffer[] {
  const out = [narString('('), narString('type')]
  if (n.type === 'regular') {
    out.push(narString('regular'))
    if (n.executable) out.push(narString('executable'), narString(''))
    out.push(narString('contents'), narString(n.contents))
  } else if (n.type === 'symlink') {
    out.push(narString('symlink'), narString('target'), narString(n.target))
  } else {
    out.push(narString('directory'))
    for (const [name, child] of n.entries) {
      out.push(narString('entry'), narString('('), narString('name'), narString(name), narString('node'), ...node(child), narString(')'))
    }
  }
  out.push(narString(')'))
  return out
}

/** The NAR serialisation of a tree (entries are written in the order given). */
export function writeNar(root: NarNode): Buffer {
  return Buffer.concat([narString('nix-archive-1'), ...node(root)])
}
