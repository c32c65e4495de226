/**
 * The status page's last hour: cumulative samples turned into one bucket per
 * minute, the current minute counting up to now.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StatusHistory } from '../../src/server/status-data.js'

const MIN = 60_000
const t0 = Date.UTC(2026, 0, 1, 12, 0, 0)
const totals = (hits: number, misses = 0, other = 0, bytes = 0) => ({ hits, misses, other, bytes })

test('sixty minutes, oldest first, each the difference of the totals at its ends', () => {
  const h = new StatusHistory(t0 + 10_000)
  h.add(t0 + 30_000, totals(5, 1))
  h.add(t0 + MIN + 20_000, totals(12, 3, 1, 100))
  const b = h.buckets(t0 + 2 * MIN + 5_000, totals(20, 3, 1, 150))
  assert.equal(b.length, 60)
  assert.equal(b.at(-1)!.start, t0 + 2 * MIN)
  // 12:00 holds what the 12:00:30 sample saw; 12:01 the rest up to the last sample before 12:02; 12:02 up to now.
  assert.deepEqual(b.slice(-3).map((x) => [x.hits, x.misses, x.other, x.bytes]), [[5, 1, 0, 0], [7, 2, 1, 100], [8, 0, 0, 50]])
  assert.ok(b.slice(0, -3).every((x) => x.hits + x.misses + x.other + x.bytes === 0), 'before the start: nothing')
  assert.equal(b.reduce((n, x) => n + x.hits, 0), 20, 'the minutes add up to the totals')
})

test('a worker restarted with its counters at zero never makes a minute negative', () => {
  const h = new StatusHistory(t0)
  h.add(t0 + 10_000, totals(50))
  h.add(t0 + MIN + 10_000, totals(10))
  const b = h.buckets(t0 + MIN + 30_000, totals(15))
  assert.deepEqual(b.slice(-2).map((x) => x.hits), [50, 0])
})

test('after more than an hour, the chart holds the last sixty minutes', () => {
  const h = new StatusHistory(t0)
  for (let i = 1; i <= 200; i++) h.add(t0 + i * 30_000, totals(i))
  const b = h.buckets(t0 + 200 * 30_000, totals(200))
  assert.equal(b.length, 60)
  // Now is 13:40:00: the buckets run from 12:41 (total 82 then) to the minute just begun.
  assert.equal(b[0].start, t0 + 41 * MIN)
  assert.equal(b.reduce((n, x) => n + x.hits, 0), 200 - 82)
})
