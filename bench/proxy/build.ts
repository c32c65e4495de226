/**
 * A build of narthex of its own for the benchmark, under bench/.data/build/:
 * the repository's dist/ may be rebuilt at any moment by tests running on this
 * machine, and the working tree's src/ may hold someone's unfinished edits.
 *
 * By default the committed HEAD is built (`git archive`), and reused while
 * HEAD does not move; `--rev REV` builds another commit; `--worktree` builds
 * the working tree's src/ as it is now.
 */
import { existsSync } from 'node:fs'
import { cp, mkdir, readdir, rename, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { runOk } from './measure.js'

export interface NarthexBuild {
  /** bin/narthex.js of the build. */
  readonly bin: string
  /** What was built, for the results: a commit, or the working tree on top of one. */
  readonly label: string
}

async function compile(root: string, dir: string): Promise<void> {
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  await runOk(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.build.json')], {
    cwd: dir,
    timeoutMs: 300_000,
  })
  // Commits since the bundle (scripts/bundle.mjs) run dist/bundle/, as `npm run build` makes it.
  if (existsSync(join(dir, 'scripts', 'bundle.mjs'))) await runOk(process.execPath, [join(dir, 'scripts', 'bundle.mjs')], { cwd: dir, timeoutMs: 300_000 })
}

const BUILD_FILES = ['src', 'bin', 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts/bundle.mjs', 'scripts/code-cache.mjs']

/** The files a build needs, of those that exist at `rev` (the bundle scripts are newer than the others). */
async function buildFiles(root: string, rev: string): Promise<string[]> {
  const present = (await runOk('git', ['-C', root, 'ls-tree', '--name-only', rev, '--', ...BUILD_FILES])).stdout.split('\n').filter((l) => l !== '')
  return BUILD_FILES.filter((f) => present.includes(f))
}

export async function buildNarthex(root: string, dataRoot: string, opts: { rev?: string; worktree?: boolean }, log: (m: string) => void): Promise<NarthexBuild> {
  const buildRoot = join(dataRoot, 'build')
  await mkdir(buildRoot, { recursive: true })
  const head = (await runOk('git', ['-C', root, 'rev-parse', opts.rev ?? 'HEAD'])).stdout.trim()
  const short = head.slice(0, 12)
  if (opts.worktree) {
    const dir = join(buildRoot, 'worktree')
    await rm(dir, { recursive: true, force: true })
    await mkdir(dir)
    for (const f of BUILD_FILES) await cp(join(root, f), join(dir, f), { recursive: true })
    log(`building narthex from the working tree (on ${short})`)
    await compile(root, dir)
    const dirty = (await runOk('git', ['-C', root, 'status', '--porcelain', '--', 'src'])).stdout.trim() !== ''
    return { bin: join(dir, 'bin', 'narthex.js'), label: `working tree on ${short}${dirty ? ' with uncommitted src/ changes' : ' (src/ clean)'}` }
  }
  const dir = join(buildRoot, short)
  const bin = join(dir, 'bin', 'narthex.js')
  // Builds of earlier commits are not needed any more.
  for (const old of await readdir(buildRoot)) {
    if (old !== short && old !== 'worktree') await rm(join(buildRoot, old), { recursive: true, force: true })
  }
  if (!existsSync(join(dir, 'dist', 'cli', 'main.js'))) {
    log(`building narthex at commit ${short}`)
    const tmp = `${dir}.tmp`
    await rm(tmp, { recursive: true, force: true })
    await mkdir(tmp)
    const files = (await buildFiles(root, head)).map((f) => `'${f}'`).join(' ')
    await runOk('sh', ['-c', `git -C '${root}' archive '${head}' ${files} | tar -x -C '${tmp}'`])
    await compile(root, tmp)
    await rm(dir, { recursive: true, force: true })
    await rename(tmp, dir)
  }
  return { bin, label: `commit ${short}` }
}
