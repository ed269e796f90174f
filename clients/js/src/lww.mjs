// The last-writer-wins view of a supamerge entity, computed the way every
// supamerge replica computes it (docs/interop.md, "The conflict rule, step by
// step"; src/conflict.rs in Rust).
//
//   norm(t) = t * 1000 when 0 < t < 1e11 (seconds), else t (ms; 0 = no time)
//   eff(c)  = min(MAX_TIME, max(norm(c.time), 1 + eff(d) for each dependency d))
//
// Among the concurrent values of a field the one whose change has the largest
// (eff, actor) wins, then the larger op (counter, actor). Reads go through
// Automerge's low-level document (`getBackend`: exported, though marked
// hidden in Automerge's API docs), because the public API reaches nested
// objects only through Automerge's own winner.
import * as A from '@automerge/automerge'

/** Change times below this (and above 0) are unix seconds. */
export const SECONDS_BELOW = 100_000_000_000
/** The largest effective timestamp: 2^53 - 1, exact in a JavaScript number. */
export const MAX_TIME = Number.MAX_SAFE_INTEGER

/** A change's own time in ms: seconds are multiplied by 1000, then clamped. */
export function normalizeTime (time) {
  const t = Number(time)
  const ms = t > 0 && t < SECONDS_BELOW ? t * 1000 : t
  return Math.max(-MAX_TIME, Math.min(MAX_TIME, ms))
}

/** The effective timestamp of a change of time `time` whose dependencies have `deps`. */
export function effectiveTime (time, deps = []) {
  let e = normalizeTime(time)
  for (const d of deps) e = Math.max(e, d + 1)
  return Math.min(MAX_TIME, e)
}

/**
 * The time a new change should carry (what supamerge stamps): the wall clock
 * in ms, later than every change it depends on, never a value readers would
 * take for seconds.
 */
export function hlcTime (wallMs, maxDepEff) {
  let t = maxDepEff === undefined ? wallMs : Math.max(wallMs, maxDepEff + 1)
  if (t > 0 && t < SECONDS_BELOW) t = SECONDS_BELOW
  return Math.max(-MAX_TIME, Math.min(MAX_TIME, t))
}

/**
 * The effective timestamps of one document's changes, filled incrementally:
 * keep one per document and pass each new version of the document to it
 * (its history only grows).
 */
export class EffectiveClock {
  constructor () {
    this.eff = new Map() // change hash -> effective timestamp
    this.heads = [] // every change up to these heads is in `eff`
    this.byActor = new Map() // actor -> [{ startOp, maxOp, hash, time }] sorted by startOp
    this.time = new Map() // change hash -> time as stamped
  }

  /** Brings the cache up to `doc`'s heads. */
  fill (doc) {
    const heads = A.getHeads(doc).slice().sort()
    if (heads.length === this.heads.length && heads.every((h, i) => h === this.heads[i])) return
    const metas = A.getChangesMetaSince(doc, this.heads)
    const pending = new Map(metas.map(m => [m.hash, m]))
    const compute = (hash) => {
      // Depth first over what is not computed yet (normally nothing: the list is causal).
      const stack = [[hash, false]]
      while (stack.length > 0) {
        const [h, expanded] = stack.pop()
        if (this.eff.has(h)) continue
        const m = pending.get(h)
        if (m === undefined) { this.eff.set(h, -Infinity); continue }
        if (expanded) {
          this.eff.set(h, effectiveTime(m.time, m.deps.map(d => this.eff.get(d) ?? -Infinity)))
        } else {
          stack.push([h, true])
          for (const d of m.deps) if (!this.eff.has(d)) stack.push([d, false])
        }
      }
    }
    const unsorted = new Set()
    for (const m of metas) {
      if (!this.eff.has(m.hash)) compute(m.hash)
      if (this.time.has(m.hash)) continue
      this.time.set(m.hash, m.time)
      let list = this.byActor.get(m.actor)
      if (list === undefined) { list = []; this.byActor.set(m.actor, list) }
      // An actor's changes come in sequence order, so this is rarely needed.
      if (list.length > 0 && list[list.length - 1].startOp > m.startOp) unsorted.add(list)
      list.push({ startOp: m.startOp, maxOp: m.maxOp, hash: m.hash })
    }
    for (const list of unsorted) list.sort((a, b) => a.startOp - b.startOp)
    this.heads = heads
  }

  /** The effective timestamp of a change hash (`undefined` when unknown). */
  effective (doc, hash) {
    if (!this.eff.has(hash)) this.fill(doc)
    return this.eff.get(hash)
  }

  /** The largest effective timestamp among `hashes` (`undefined` for none). */
  maxEffective (doc, hashes) {
    let max
    for (const h of hashes) {
      const e = this.effective(doc, h)
      if (e !== undefined && (max === undefined || e > max)) max = e
    }
    return max
  }

  /** The change that made op `counter@actor`: `{ hash, eff, time }`. */
  changeOfOp (doc, opId) {
    const [counterText, actor] = opId.split('@')
    const counter = Number(counterText)
    for (let pass = 0; pass < 2; pass++) {
      const list = this.byActor.get(actor) ?? []
      let lo = 0
      let hi = list.length - 1
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        const c = list[mid]
        if (counter < c.startOp) hi = mid - 1
        else if (counter > c.maxOp) lo = mid + 1
        else return { hash: c.hash, eff: this.eff.get(c.hash), time: this.time.get(c.hash) }
      }
      this.fill(doc)
    }
    return undefined
  }
}

function parseOp (opId) {
  const at = opId.indexOf('@')
  return { counter: Number(opId.slice(0, at)), actor: opId.slice(at + 1) }
}

function compareStrings (a, b) {
  return a < b ? -1 : a > b ? 1 : 0
}

/** The stamp that orders a value: [eff, actor, counter]. */
function stampOf (doc, clock, opId) {
  const { counter, actor } = parseOp(opId)
  const change = clock.changeOfOp(doc, opId)
  return { eff: change?.eff ?? -Infinity, actor, counter, change }
}

function compareStamps (a, b) {
  if (a.eff !== b.eff) return a.eff < b.eff ? -1 : 1
  const byActor = compareStrings(a.actor, b.actor)
  if (byActor !== 0) return byActor
  return a.counter - b.counter
}

/** The op id of a full value from `getAll`: objects are named by their id. */
function opIdOf (full) {
  return full.length === 3 ? full[2] : full[1]
}

/** The last-writer-wins winner among `getAll` values. */
function winnerOf (doc, clock, all) {
  if (all.length <= 1) return all[0]
  let best = all[0]
  let bestStamp = stampOf(doc, clock, opIdOf(best))
  for (const v of all.slice(1)) {
    const s = stampOf(doc, clock, opIdOf(v))
    if (compareStamps(s, bestStamp) > 0) { best = v; bestStamp = s }
  }
  return best
}

function base64 (bytes) {
  if (typeof Buffer !== 'undefined') return Buffer.from(bytes).toString('base64')
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

function scalarToJson (full) {
  const [type, value] = full
  switch (type) {
    case 'str': return value
    case 'int':
    case 'uint':
    case 'counter': return Number(value)
    case 'f64': return Number.isFinite(value) ? value : null
    case 'timestamp': return value instanceof Date ? value.getTime() : Number(value)
    case 'boolean': return value
    case 'null': return null
    case 'bytes': return base64(value)
    default: return null
  }
}

function valueToJson (doc, am, clock, full) {
  switch (full[0]) {
    case 'text': return am.text(full[1])
    case 'list': {
      const out = []
      const n = am.length(full[1])
      for (let i = 0; i < n; i++) {
        const w = winnerOf(doc, clock, am.getAll(full[1], i))
        out.push(w === undefined ? null : valueToJson(doc, am, clock, w))
      }
      return out
    }
    case 'map':
    case 'table': return mapToJson(doc, am, clock, full[1])
    default: return scalarToJson(full)
  }
}

function mapToJson (doc, am, clock, obj) {
  const out = {}
  for (const key of am.keys(obj)) {
    const w = winnerOf(doc, clock, am.getAll(obj, key))
    if (w !== undefined) out[key] = valueToJson(doc, am, clock, w)
  }
  return out
}

/** The winner of a root key: `undefined` when absent. */
function rootWinner (doc, clock, key) {
  const am = A.getBackend(doc)
  return winnerOf(doc, clock, am.getAll('_root', key))
}

/**
 * The entity's value (its `data` map) as JSON, every field resolved by
 * last-writer-wins: equal to supamerge's `get_json` for the same changes.
 */
export function lwwView (doc, clock = new EffectiveClock()) {
  const data = rootWinner(doc, clock, 'data')
  if (data === undefined || data[0] !== 'map') return {}
  return mapToJson(doc, A.getBackend(doc), clock, data[1])
}

/** The entity's `_meta` map as JSON (last-writer-wins), `undefined` without one. */
export function metaView (doc, clock = new EffectiveClock()) {
  const meta = rootWinner(doc, clock, '_meta')
  if (meta === undefined || meta[0] !== 'map') return undefined
  return mapToJson(doc, A.getBackend(doc), clock, meta[1])
}

function escapePointer (key) {
  return key.replaceAll('~', '~0').replaceAll('/', '~1')
}

function propsOf (am, obj) {
  const type = obj === '_root' ? 'map' : am.objInfo(obj).type
  if (type === 'map' || type === 'table') return am.keys(obj)
  if (type === 'list') return Array.from({ length: am.length(obj) }, (_, i) => i)
  return []
}

function collectConflicts (doc, am, clock, obj, path, out) {
  for (const prop of propsOf(am, obj)) {
    const here = `${path}/${typeof prop === 'number' ? prop : escapePointer(prop)}`
    const all = am.getAll(obj, prop)
    if (all.length > 1) {
      const cands = all.map(full => {
        const s = stampOf(doc, clock, opIdOf(full))
        return {
          stamp: s,
          candidate: {
            value: valueToJson(doc, am, clock, full),
            actor: s.actor,
            timestamp: s.eff,
            time: s.change?.time,
            change: s.change?.hash
          }
        }
      })
      cands.sort((a, b) => compareStamps(a.stamp, b.stamp))
      const w = winnerOf(doc, clock, all)
      const winner = cands.findIndex(c => opIdOf(w) === `${c.stamp.counter}@${c.stamp.actor}`)
      out.push({ path: here, candidates: cands.map(c => c.candidate), winner })
    }
    const w = winnerOf(doc, clock, all)
    if (w !== undefined && (w[0] === 'map' || w[0] === 'table' || w[0] === 'list')) {
      collectConflicts(doc, am, clock, w[1], here, out)
    }
  }
}

/**
 * Every field of `data` holding concurrent values:
 * `[{ path, candidates: [{ value, actor, timestamp, time, change }], winner }]`,
 * as supamerge's `conflicts` lists them.
 */
export function conflicts (doc, clock = new EffectiveClock()) {
  const data = rootWinner(doc, clock, 'data')
  if (data === undefined || data[0] !== 'map') return []
  const out = []
  collectConflicts(doc, A.getBackend(doc), clock, data[1], '', out)
  return out
}

/** The JSON pointers of the counter fields of `data` (they read as numbers). */
export function counterPaths (doc, clock = new EffectiveClock()) {
  const data = rootWinner(doc, clock, 'data')
  if (data === undefined || data[0] !== 'map') return []
  const am = A.getBackend(doc)
  const out = []
  const walk = (obj, path) => {
    for (const prop of propsOf(am, obj)) {
      const here = `${path}/${typeof prop === 'number' ? prop : escapePointer(prop)}`
      const w = winnerOf(doc, clock, am.getAll(obj, prop))
      if (w === undefined) continue
      if (w[0] === 'counter') out.push(here)
      else if (w[0] === 'map' || w[0] === 'table' || w[0] === 'list') walk(w[1], here)
    }
  }
  walk(data[1], '')
  return out
}
