/**
 * The audit outbox: an admission's index batch and its audit entry are two
 * writes to two files, so a crash between them could leave an admission with
 * no audit entry. Instead, {@link Store.putNarInfo} writes the audit event into
 * the index's `auditOutbox` sublevel in the same synced batch as the admission;
 * {@link appendFromOutbox} then appends it to the audit log and, once it is
 * durable there, removes it from the outbox. At start, {@link replayAuditOutbox}
 * appends every event still in the outbox that the log does not hold yet (each
 * event carries a unique `id`, which its audit entry keeps), so after any crash
 * every admission in the index has exactly one audit entry.
 */
import { randomBytes } from 'node:crypto'
import { open, stat } from 'node:fs/promises'
import { readAuditLog, type AuditEvent, type AuditLog } from './audit.js'
import type { Store } from './store.js'

let counter = 0
const processTag = randomBytes(4).toString('hex')

/**
 * A new audit event id: the time in milliseconds, a per-process counter and a
 * random tag, so ids sort by creation time (the outbox replays oldest first)
 * and never collide, not even across restarts within one millisecond.
 */
export function newAuditId(now = Date.now()): string {
  counter = (counter + 1) % 0x1000000
  return `${now.toString(36).padStart(9, '0')}-${counter.toString(36).padStart(5, '0')}-${processTag}`
}

/** The creation time (ms) an id from {@link newAuditId} carries, or undefined for another id. */
function timeOfId(id: string): number | undefined {
  const t = parseInt(id.split('-')[0], 36)
  return Number.isFinite(t) ? t : undefined
}

/** The event with a fresh id, ready for {@link Store.putNarInfo}. */
export function withAuditId(event: AuditEvent): AuditEvent & { id: string } {
  return { id: newAuditId(), ...event }
}

/**
 * Appends an event that {@link Store.putNarInfo} put in the outbox, then
 * removes it from there. Resolves once the audit entry is durable.
 */
export async function appendFromOutbox(store: Store, audit: AuditLog, event: AuditEvent & { id: string }): Promise<void> {
  await audit.append(event)
  await store.clearAuditOutbox([event.id])
}

/** What {@link replayAuditOutbox} did. */
export interface OutboxReplay {
  /** Events appended to the log now (a crash came between the admission and its audit entry). */
  readonly appended: number
  /** Events the log held already (a crash came between the audit entry and the outbox removal). */
  readonly alreadyLogged: number
}

// Entries are a few hundred bytes; this holds thousands of the latest.
const TAIL_BYTES = 1 << 20
// Leeway for a clock stepped back between an event's id and its entry's time.
const CLOCK_SLACK_MS = 10 * 60 * 1000

/**
 * Appends every event left in the outbox that the audit log does not hold,
 * oldest first, then empties the outbox. Call it after {@link Store.open} and
 * {@link AuditLog.open}, before anything admits.
 * @throws NarthexError STORE_IO when the log or the index cannot be read or written.
 */
export async function replayAuditOutbox(store: Store, audit: AuditLog): Promise<OutboxReplay> {
  const pending: Array<AuditEvent & { id: string }> = []
  for await (const event of store.auditOutbox()) if (event.id) pending.push(event as AuditEvent & { id: string })
  if (pending.length === 0) return { appended: 0, alreadyLogged: 0 }
  const oldest = Math.min(...pending.map((e) => timeOfId(e.id) ?? 0))
  const logged = await idsInLog(audit.path, new Set(pending.map((e) => e.id)), oldest - CLOCK_SLACK_MS)
  const missing = pending.filter((e) => !logged.has(e.id))
  // Appended together: one group commit, in outbox (creation) order.
  await Promise.all(missing.map((e) => audit.append(e)))
  await store.clearAuditOutbox(pending.map((e) => e.id))
  return { appended: missing.length, alreadyLogged: pending.length - missing.length }
}

/**
 * Which of `wanted` appear as entry ids in the log. An outbox event's entry is
 * written after the event was created, so only entries from `since` on can hold
 * it: the log's tail is read, and the whole log only when that tail does not
 * reach back to `since`.
 */
async function idsInLog(path: string, wanted: ReadonlySet<string>, since: number): Promise<Set<string>> {
  const found = new Set<string>()
  const tail = await readTail(path)
  if (tail === undefined) return found
  let earliest = Infinity
  for (const line of tail.lines) {
    const entry = parseEntry(line)
    if (!entry) continue
    if (entry.id !== undefined && wanted.has(entry.id)) found.add(entry.id)
    earliest = Math.min(earliest, entry.time)
  }
  if (tail.whole || earliest < since) return found
  for await (const { entry } of readAuditLog(path)) {
    if (typeof entry?.id === 'string' && wanted.has(entry.id)) found.add(entry.id)
  }
  return found
}

function parseEntry(line: string): { id: string | undefined; time: number } | undefined {
  try {
    const e = JSON.parse(line) as { id?: unknown; time?: unknown }
    return { id: typeof e.id === 'string' ? e.id : undefined, time: typeof e.time === 'string' ? Date.parse(e.time) : NaN }
  } catch {
    return undefined
  }
}

/** The complete lines of the last {@link TAIL_BYTES} of the log; undefined when there is no log. */
async function readTail(path: string): Promise<{ lines: string[]; whole: boolean } | undefined> {
  let size: number
  try {
    size = (await stat(path)).size
  } catch {
    return undefined
  }
  const start = Math.max(0, size - TAIL_BYTES)
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(size - start)
    await fh.read(buf, 0, buf.length, start)
    const lines = buf.toString('utf8').split('\n')
    // A window that starts mid-line cuts its first line.
    if (start > 0) lines.shift()
    return { lines: lines.filter((l) => l !== ''), whole: start === 0 }
  } finally {
    await fh.close()
  }
}
