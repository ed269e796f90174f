// Push and pull over supabase-js `rpc()`, and a small in-memory workspace of
// entities kept in sync with supamerge replicas (docs/interop.md).
import * as A from '@automerge/automerge'
import { EffectiveClock, hlcTime, lwwView, conflicts, counterPaths, metaView } from './lww.mjs'

/** An error answered by the server (PostgREST's JSON) or a protocol mismatch. */
export class SupamergeError extends Error {
  constructor (fn, status, error) {
    super(`${fn} failed (${status}): ${error?.message ?? 'no answer'}`)
    this.name = 'SupamergeError'
    this.status = status
    this.code = error?.code
    this.details = error?.details
  }
}

function toBase64 (bytes) {
  if (typeof Buffer !== 'undefined') return Buffer.from(bytes).toString('base64')
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

function fromBase64 (text) {
  if (typeof Buffer !== 'undefined') return new Uint8Array(Buffer.from(text, 'base64'))
  return Uint8Array.from(atob(text), c => c.charCodeAt(0))
}

/** A UUIDv7 (time-ordered, as supamerge makes document ids). */
export function uuidv7 (now = Date.now()) {
  const b = crypto.getRandomValues(new Uint8Array(16))
  let ms = BigInt(now)
  for (let i = 5; i >= 0; i--) { b[i] = Number(ms & 0xffn); ms >>= 8n }
  b[6] = (b[6] & 0x0f) | 0x70
  b[8] = (b[8] & 0x3f) | 0x80
  const h = Array.from(b, x => x.toString(16).padStart(2, '0')).join('')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** The RPC functions of the supamerge migration, called through supabase-js. */
export class SupamergeClient {
  /** @param supabase a client from `createClient(url, anonKey, ...)` carrying the user's token */
  constructor (supabase) {
    this.supabase = supabase
  }

  async call (fn, args) {
    const { data, error, status } = await this.supabase.rpc(fn, args)
    if (error) throw new SupamergeError(fn, status, error)
    return data
  }

  /**
   * Creates a workspace named `name`; the server picks its id and the caller
   * becomes its owner. Resolves to the workspace id. `request` is the
   * idempotency key: calling again with the same key (e.g. after a lost
   * answer) returns the workspace the first call made instead of a second one.
   */
  async createWorkspace (name, request = crypto.randomUUID()) {
    const data = await this.call('supamerge_create_workspace', { p_name: name, p_request: request })
    if (typeof data?.workspace_id !== 'string') {
      throw new SupamergeError('supamerge_create_workspace', 200, { message: `unexpected answer ${JSON.stringify(data)}` })
    }
    return data.workspace_id
  }

  addMember (workspace, user, role) {
    return this.call('supamerge_add_member', { p_workspace: workspace, p_user: user, p_role: role })
  }

  /**
   * Pushes changes `[{ docId, collection, bytes }]` (at most 1000 and 1 MiB);
   * resolves to one outcome per change: `{status: 'stored', seq}`,
   * `{status: 'already_present'}` or `{status: 'rejected', reason}`.
   */
  async push (workspace, changes) {
    const items = changes.map(c => ({
      doc_id: c.docId,
      collection: c.collection,
      hash: A.decodeChange(c.bytes).hash,
      bytes: toBase64(c.bytes)
    }))
    const data = await this.call('supamerge_push', { p_workspace: workspace, p_changes: items })
    if (data?.v !== 1 || !Array.isArray(data.results) || data.results.length !== items.length) {
      throw new SupamergeError('supamerge_push', 200, { message: `unexpected answer ${JSON.stringify(data)}` })
    }
    return data.results
  }

  /** One page of changes after `cursor`: `{ changes: [{seq, docId, collection, hash, bytes}], nextCursor, hasMore }`. */
  async pull (workspace, cursor = '', limit = 1000) {
    const data = await this.call('supamerge_pull', { p_workspace: workspace, p_cursor: cursor, p_limit: limit })
    if (data?.v !== 1) {
      throw new SupamergeError('supamerge_pull', 200, { message: `unexpected answer ${JSON.stringify(data)}` })
    }
    return {
      changes: data.changes.map(c => ({
        seq: c.seq, docId: c.doc_id, collection: c.collection, hash: c.hash, bytes: fromBase64(c.bytes)
      })),
      nextCursor: data.next_cursor,
      hasMore: data.has_more
    }
  }
}

/**
 * The entities of one workspace, in memory: create and edit them with
 * Automerge, push what is new, pull what others wrote, and read them the way
 * supamerge replicas do. (An app keeps `outbox` and `cursor` durable itself.)
 */
export class Workspace {
  constructor (client, workspace, { now = () => Date.now() } = {}) {
    this.client = client
    this.workspace = workspace
    this.now = now
    this.docs = new Map() // doc id -> { doc, collection, clock }
    this.outbox = [] // [{ docId, collection, bytes }] not yet accepted by the server
    this.rejected = [] // [{ change, reason }]
    this.cursor = ''
  }

  /** Creates an entity of `collection` with `data` (Automerge types as given); returns its id. */
  create (collection, data, { time } = {}) {
    const docId = uuidv7(this.now())
    const stamp = time ?? hlcTime(this.now())
    const doc = A.change(A.init(), { time: stamp }, d => {
      d._meta = {
        collection: new A.ImmutableString(collection),
        workspace: new A.ImmutableString(this.workspace),
        deleted: false,
        schema: 0
      }
      d.data = data
    })
    this.docs.set(docId, { doc, collection, clock: new EffectiveClock() })
    this.outbox.push(...A.getAllChanges(doc).map(bytes => ({ docId, collection, bytes })))
    return docId
  }

  entry (docId) {
    const e = this.docs.get(docId)
    if (e === undefined) throw new Error(`no entity ${docId} in workspace ${this.workspace}`)
    return e
  }

  /**
   * Edits an entity: `fn(data)` as in `Automerge.change`. The change is
   * stamped like supamerge's (ms, after everything it has seen) unless
   * `options.time` is given; `options.time: null` leaves Automerge's default
   * (seconds).
   */
  change (docId, fn, options = {}) {
    const e = this.entry(docId)
    const before = e.doc
    let time = options.time
    if (time === undefined) time = hlcTime(this.now(), e.clock.maxEffective(before, A.getHeads(before)))
    const opts = time === null ? {} : { time }
    e.doc = A.change(before, opts, d => fn(d.data, d))
    this.outbox.push(...A.getChanges(before, e.doc).map(bytes => ({ docId, collection: e.collection, bytes })))
  }

  /** Deletes an entity (its replicated tombstone). */
  delete (docId, options = {}) {
    this.change(docId, (_, root) => { root._meta.deleted = true }, options)
  }

  /** Pushes the outbox in batches; rejected changes move to `rejected`. */
  async push () {
    let stored = 0
    while (this.outbox.length > 0) {
      const batch = this.outbox.slice(0, 500)
      const results = await this.client.push(this.workspace, batch)
      results.forEach((r, i) => {
        if (r.status === 'rejected') this.rejected.push({ change: batch[i], reason: r.reason })
        else stored += 1
      })
      this.outbox.splice(0, batch.length)
    }
    return stored
  }

  /** Pulls every page after the cursor and applies it; returns the number of changes. */
  async pull () {
    let n = 0
    for (;;) {
      const page = await this.client.pull(this.workspace, this.cursor)
      const byDoc = new Map()
      for (const c of page.changes) {
        if (!byDoc.has(c.docId)) byDoc.set(c.docId, { collection: c.collection, bytes: [] })
        byDoc.get(c.docId).bytes.push(c.bytes)
      }
      for (const [docId, { collection, bytes }] of byDoc) {
        let e = this.docs.get(docId)
        if (e === undefined) {
          e = { doc: A.init(), collection, clock: new EffectiveClock() }
          this.docs.set(docId, e)
        }
        // Automerge queues a change until its dependencies arrive.
        ;[e.doc] = A.applyChanges(e.doc, bytes)
      }
      n += page.changes.length
      this.cursor = page.nextCursor
      if (!page.hasMore) return n
    }
  }

  /** Push, then pull. */
  async sync () {
    const pushed = await this.push()
    const pulled = await this.pull()
    return { pushed, pulled }
  }

  /** The entity's value, every field resolved by last-writer-wins (= supamerge `get`). */
  view (docId) {
    const e = this.entry(docId)
    return lwwView(e.doc, e.clock)
  }

  /** The entity's conflicted fields (= supamerge `conflicts`). */
  conflicts (docId) {
    const e = this.entry(docId)
    return conflicts(e.doc, e.clock)
  }

  /** The counter fields of the entity. */
  counters (docId) {
    const e = this.entry(docId)
    return counterPaths(e.doc, e.clock)
  }

  /** Whether the entity's tombstone is set. */
  isDeleted (docId) {
    const e = this.entry(docId)
    return metaView(e.doc, e.clock)?.deleted === true
  }

  /** The Automerge document of an entity. */
  doc (docId) {
    return this.entry(docId).doc
  }
}
