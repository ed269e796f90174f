// The conflict rule of docs/interop.md on documents made with
// @automerge/automerge itself: seconds, zero, negative and skewed times,
// ties, nested objects, lists, counters. No server needed.
import test from 'node:test'
import assert from 'node:assert/strict'
import * as A from '@automerge/automerge'
import {
  normalizeTime, effectiveTime, hlcTime, EffectiveClock, lwwView, conflicts, counterPaths,
  SECONDS_BELOW, MAX_TIME
} from '../src/index.mjs'

const T = 1_790_000_000_000
const actor = n => n.toString(16).padStart(2, '0').repeat(16)

/** A supamerge-shaped document created at `time` by actor 1. */
function created (data, time = T) {
  return A.change(A.init({ actor: actor(1) }), { time }, d => {
    d._meta = { collection: new A.ImmutableString('tasks'), deleted: false, schema: 0 }
    d.data = data
  })
}

/** A fork of `doc` writing as actor `n` with `time` (undefined: Automerge's default). */
function write (doc, n, time, fn) {
  const fork = A.clone(doc, { actor: actor(n) })
  return A.change(fork, time === undefined ? {} : { time }, d => fn(d.data))
}

const str = s => new A.ImmutableString(s)

test('times are normalised to milliseconds', () => {
  assert.equal(normalizeTime(1_790_000_000), T)
  assert.equal(normalizeTime(T), T)
  assert.equal(normalizeTime(SECONDS_BELOW - 1), (SECONDS_BELOW - 1) * 1000)
  assert.equal(normalizeTime(SECONDS_BELOW), SECONDS_BELOW)
  assert.equal(normalizeTime(0), 0)
  assert.equal(normalizeTime(-5), -5)
  assert.equal(normalizeTime(2 ** 60), MAX_TIME)
  assert.equal(effectiveTime(0, [T]), T + 1)
  assert.equal(effectiveTime(1_790_000_000, [T + 5]), T + 6)
  assert.equal(effectiveTime(1_790_000_002, [T]), T + 2000)
  assert.equal(effectiveTime(-9, [-20, 3]), 4)
  assert.equal(effectiveTime(0, [MAX_TIME]), MAX_TIME)
  assert.equal(hlcTime(T - 50, T), T + 1)
  assert.equal(hlcTime(5000), SECONDS_BELOW)
  assert.equal(hlcTime(0), 0)
})

test('a write stamped in seconds 1.1 s after a concurrent ms write wins', () => {
  const base = created({ title: str('draft') })
  const desktop = write(base, 2, T + 1000, d => { d.title = str('from desktop') })
  const web = write(base, 3, Math.floor((T + 2100) / 1000), d => { d.title = str('from web') })
  const merged = A.merge(A.clone(desktop), web)
  assert.deepEqual(lwwView(merged), { title: 'from web' })
  const c = conflicts(merged)
  assert.equal(c.length, 1)
  assert.equal(c[0].path, '/title')
  assert.deepEqual(c[0].candidates.map(x => [x.value, x.timestamp, x.time]), [
    ['from desktop', T + 1000, T + 1000],
    ['from web', T + 2000, Math.floor((T + 2100) / 1000)]
  ])
  assert.equal(c[0].winner, 1)
  // Read as milliseconds, the web write would be from January 1970: Automerge's
  // own winner (highest op id) is not the rule either.
})

test('a write that has seen a value beats what that value beat', () => {
  const base = created({ x: str('init') })
  const w = write(base, 9, T + 100, d => { d.x = str('w') })
  const a = write(base, 2, T + 500, d => { d.x = str('a') })
  assert.deepEqual(lwwView(A.merge(A.clone(a), w)), { x: 'a' }, 'a beat w')
  // j has seen a (not w); its clock is a minute behind and stamps seconds.
  const j = write(a, 3, Math.floor((T - 60_000) / 1000), d => { d.x = str('j') })
  const all = A.merge(A.clone(j), w)
  assert.deepEqual(lwwView(all), { x: 'j' })
  const [c] = conflicts(all)
  assert.deepEqual(c.candidates.map(x => [x.value, x.timestamp]), [['w', T + 100], ['j', T + 501]])
})

test('writers with no time (0) and negative times follow causality', () => {
  const base = created({ n: 1 })
  let chain = base
  for (let i = 0; i < 3; i++) chain = write(chain, 2, 0, d => { d.n = 10 + i })
  const clock = new EffectiveClock()
  const hashes = A.getChangesMetaSince(chain, []).map(m => m.hash)
  assert.deepEqual(hashes.map(h => clock.effective(chain, h)), [T, T + 1, T + 2, T + 3])
  // A concurrent ms write after creation beats the zero-stamped chain.
  const rival = write(base, 1, T + 2, d => { d.n = 99 })
  assert.deepEqual(lwwView(A.merge(A.clone(chain), rival)), { n: 12 }, 'T + 3 > T + 2')
  const late = write(base, 1, T + 4, d => { d.n = 98 })
  assert.deepEqual(lwwView(A.merge(A.clone(chain), late)), { n: 98 })
  // A negative time is ms before 1970: it loses to any real clock.
  const fresh = created({ v: 0 }, -5)
  const x = write(fresh, 2, -3, d => { d.v = str('neg') })
  const y = write(fresh, 3, 0, d => { d.v = str('zero') })
  assert.deepEqual(lwwView(A.merge(A.clone(x), y)), { v: 'zero' }, 'eff -3 < eff 0')
  const z = write(fresh, 3, -4, d => { d.v = str('more negative') })
  assert.deepEqual(lwwView(A.merge(A.clone(x), z)), { v: 'neg' }, 'eff max(-4, -5 + 1) = -4 < -3')
})

test('equal effective timestamps go to the larger actor', () => {
  const base = created({ v: 0 })
  const lo = write(base, 0x0a, 0, d => { d.v = str('lo') })
  const hi = write(base, 0xb0, 0, d => { d.v = str('hi') })
  assert.deepEqual(lwwView(A.merge(A.clone(lo), hi)), { v: 'hi' })
  assert.deepEqual(lwwView(A.merge(A.clone(hi), lo)), { v: 'hi' })
})

test('nested objects, lists, text and counters', () => {
  const base = created({ tags: ['x', 'y'], likes: new A.Counter(1), note: 'hello' })
  const a = write(base, 2, T + 10, d => {
    d.addr = { city: str('Paris'), zip: 1 }
    d.tags[1] = str('from a')
    d.likes.increment(2)
    A.splice(d, ['note'], 5, 0, ' world')
  })
  const b = write(base, 3, T + 20, d => {
    d.addr = { city: str('Lyon') }
    d.tags[1] = str('from b')
    d.likes.increment(3)
    A.splice(d, ['note'], 0, 0, '>> ')
  })
  const m = A.merge(A.clone(a), b)
  assert.deepEqual(lwwView(m), {
    tags: ['x', 'from b'], likes: 6, note: '>> hello world', addr: { city: 'Lyon' }
  })
  assert.deepEqual(conflicts(m).map(c => [c.path, c.candidates[c.winner].value]), [
    ['/addr', { city: 'Lyon' }], ['/tags/1', 'from b']
  ])
  assert.deepEqual(counterPaths(m), ['/likes'])
})

test('scalar types read as supamerge reads them', () => {
  let doc = created({
    s: str('scalar'), t: 'text', i: -3, f: 1.5, b: true, z: null,
    ts: new Date(1234), bytes: new Uint8Array([0, 1, 255])
  })
  // An unsigned integer reads as a BigInt in JavaScript: the view gives a number.
  doc = A.change(doc, d => { d.data.u = new A.Uint(7) })
  assert.equal(typeof doc.data.u, 'bigint')
  assert.deepEqual(lwwView(doc), {
    s: 'scalar', t: 'text', i: -3, u: 7, f: 1.5, b: true, z: null, ts: 1234, bytes: 'AAH/'
  })
})

test('the cache fills incrementally', () => {
  let doc = created({ n: 0 })
  const clock = new EffectiveClock()
  lwwView(doc, clock)
  for (let i = 1; i <= 5; i++) {
    doc = write(doc, 2, 0, d => { d.n = i })
    assert.equal(clock.maxEffective(doc, A.getHeads(doc)), T + i)
  }
  assert.equal(clock.eff.size, 6)
})
