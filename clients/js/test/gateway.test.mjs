// A JavaScript writer (this client, through supabase-js) and a Rust replica
// (the `supamerge` CLI: real processes) edit the same entity concurrently,
// through a `supamerge gateway` process on PostgreSQL with the real
// migration. After every round the JS last-writer-wins view equals
// `supamerge get --json` and the JS conflict list equals `supamerge conflicts
// --json`. Also every push mistake of docs/interop.md, and its answer.
//
// Started by `cargo test --test js_client`, which provides the gateway and
// these variables; without them every test here fails (never skips).
import test from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import * as A from '@automerge/automerge'
import { createClient } from '@supabase/supabase-js'
// supabase-js builds a Realtime client eagerly; Node 20 has no global WebSocket.
import WebSocket from 'ws'
import { SupamergeClient, Workspace, uuidv7, lwwView } from '../src/index.mjs'

const NEEDED = ['SUPAMERGE_URL', 'SUPAMERGE_ANON_KEY', 'SUPAMERGE_JS_TOKEN', 'SUPAMERGE_RUST_TOKEN',
  'SUPAMERGE_RUST_USER', 'SUPAMERGE_BIN']
const missing = NEEDED.filter(k => !process.env[k])
const env = Object.fromEntries(NEEDED.map(k => [k, process.env[k]]))

function requireEnv () {
  if (missing.length > 0) {
    throw new Error(`${missing.join(', ')} not set: run these tests through \`cargo test --test js_client\`, which starts the gateway`)
  }
}

function supabaseClient (token) {
  return createClient(env.SUPAMERGE_URL, env.SUPAMERGE_ANON_KEY, {
    realtime: { transport: WebSocket },
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false }
  })
}

/** A Rust replica: a directory driven through the `supamerge` CLI. */
class RustReplica {
  constructor (workspace) {
    this.dir = mkdtempSync(join(tmpdir(), 'supamerge-js-interop-'))
    this.workspace = workspace
  }

  run (args, { ok = true } = {}) {
    const r = spawnSync(env.SUPAMERGE_BIN, ['--data', this.dir, '--json', ...args], { encoding: 'utf8' })
    if (ok && r.status !== 0) {
      throw new Error(`supamerge ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
    }
    return r
  }

  json (args) {
    return JSON.parse(this.run(args).stdout)
  }

  sync () {
    return this.json(['sync', '--supabase-url', env.SUPAMERGE_URL, '--anon-key', env.SUPAMERGE_ANON_KEY,
      '--access-token', env.SUPAMERGE_RUST_TOKEN, '--workspace', this.workspace])
  }

  get (id) { return this.json(['get', id]).data }
  conflicts (id) { return this.json(['conflicts', id]) }
  info (id) { return this.json(['info', id]) }
  edit (id, patch) { return this.json(['edit', id, JSON.stringify(patch)]) }
  create (collection, value) { return this.json(['create', this.workspace, collection, JSON.stringify(value)]).id }
  remove () { rmSync(this.dir, { recursive: true, force: true }) }
}

const str = s => new A.ImmutableString(s)

/** A workspace owned by the JS user with the Rust user as a writer. */
async function setup () {
  requireEnv()
  const client = new SupamergeClient(supabaseClient(env.SUPAMERGE_JS_TOKEN))
  const ws = await client.createWorkspace('interop')
  await client.addMember(ws, env.SUPAMERGE_RUST_USER, 'writer')
  return { client, ws, js: new Workspace(client, ws), rust: new RustReplica(ws) }
}

/** Both sides converge: JS pushes, Rust syncs (push and pull), JS pulls. */
async function exchange (js, rust) {
  await js.push()
  assert.equal(js.rejected.length, 0, JSON.stringify(js.rejected))
  rust.sync()
  await js.pull()
}

function assertSameViews (js, rust, id, what) {
  assert.deepEqual(js.view(id), rust.get(id), `${what}: the JS view equals supamerge get`)
  assert.deepEqual(js.conflicts(id), rust.conflicts(id), `${what}: the JS conflicts equal supamerge conflicts`)
}

test('a JS writer and a Rust replica edit the same fields in rounds and read identical values', async () => {
  const { js, rust } = await setup()
  try {
    const id = js.create('tasks', {
      title: str('t0'), n: 0, done: false, tags: ['a'], note: 'hello', likes: new A.Counter(0)
    })
    await exchange(js, rust)
    assertSameViews(js, rust, id, 'after creation')
    assert.deepEqual(rust.info(id).counters, ['/likes'])
    assert.deepEqual(js.counters(id), ['/likes'])

    // How the JS writer stamps its changes, round by round.
    const modes = [
      ['ms, after everything seen (the client default)', undefined],
      ["Automerge's default: seconds", null],
      ['no time (0)', 0],
      ['a clock an hour ahead, ms', () => Date.now() + 3_600_000],
      ['a clock a day behind, seconds', () => Math.floor((Date.now() - 86_400_000) / 1000)],
      ['a negative time', -1],
      ['a clock a year ahead, seconds', () => Math.floor((Date.now() + 365 * 86_400_000) / 1000)],
      ["Automerge's default again", null]
    ]
    let likes = 0
    for (const [k, [mode, time]] of modes.entries()) {
      const what = `round ${k + 1} (${mode})`
      const jsTime = typeof time === 'function' ? time() : time
      // Concurrent: neither side has seen the other's write of this round.
      js.change(id, (d, root) => {
        d.title = str(`js ${k}`)
        d.n = 100 + k
        if (k % 2 === 0) d.done = !d.done
        d.likes.increment(1)
        A.splice(root, ['data', 'note'], 0, 0, `j${k} `)
        d.tags.push(`js${k}`)
      }, { time: jsTime })
      const rustView = rust.get(id)
      rust.edit(id, {
        title: `rust ${k}`,
        n: 200 + k,
        done: k % 3 === 0,
        likes: rustView.likes + 2, // a merge patch on a counter increments it by the difference
        note: `${rustView.note} r${k}`
      })
      likes += 3
      await exchange(js, rust)
      assertSameViews(js, rust, id, what)
      const view = js.view(id)
      assert.equal(view.likes, likes, `${what}: both increments count`)
      assert.ok(view.note.includes(`j${k} `) && view.note.includes(` r${k}`), `${what}: text merges: ${view.note}`)
      const paths = js.conflicts(id).map(c => c.path)
      assert.ok(paths.includes('/title') && paths.includes('/n'), `${what}: the scalar fields are in conflict: ${paths}`)
    }
    // JSON.stringify works on the document Rust and JS wrote (no BigInt).
    assert.ok(JSON.stringify(js.doc(id)).includes('"schema":0'))
  } finally {
    rust.remove()
  }
})

test('a JS write stamped in seconds 1.1 s after a concurrent Rust write wins on both sides', async () => {
  const { js, rust } = await setup()
  try {
    const id = js.create('tasks', { title: str('draft') })
    await exchange(js, rust)
    rust.edit(id, { title: 'from rust' })
    await sleep(1100)
    js.change(id, d => { d.title = str('from js') }, { time: null }) // seconds
    await exchange(js, rust)
    assert.equal(js.view(id).title, 'from js')
    assertSameViews(js, rust, id, 'seconds against milliseconds')
    const [c] = js.conflicts(id)
    assert.equal(c.candidates[c.winner].value, 'from js')
    assert.ok(c.candidates[c.winner].time < 1e11, 'it stamped seconds')
  } finally {
    rust.remove()
  }
})

test('a JS write that has seen a value beats what that value beat', async () => {
  const { client, ws, js, rust } = await setup()
  try {
    const id = js.create('tasks', { x: str('init') })
    await exchange(js, rust)
    const other = new Workspace(client, ws) // another JS device
    await other.pull()
    // w: written by a device whose clock is 5 s behind, not pushed yet.
    other.change(id, d => { d.x = str('w') }, { time: Date.now() - 5000 })
    // a: the Rust replica, later; it beats w.
    rust.edit(id, { x: 'a' })
    rust.sync()
    // j: a JS device that has seen a (not w), its clock a minute behind, seconds.
    await js.pull()
    assert.equal(js.view(id).x, 'a')
    js.change(id, d => { d.x = str('j') }, { time: Math.floor((Date.now() - 60_000) / 1000) })
    await js.push()
    await other.push()
    rust.sync()
    await js.pull()
    await other.pull()
    assert.equal(js.view(id).x, 'j')
    assert.equal(other.view(id).x, 'j')
    assertSameViews(js, rust, id, 'causality')
    const [c] = rust.conflicts(id)
    assert.deepEqual(c.candidates.map(x => x.value), ['w', 'j'])
  } finally {
    rust.remove()
  }
})

test('an entity Rust created reads the same in JS, and JSON.stringify works on it', async () => {
  const { js, rust } = await setup()
  try {
    const id = rust.create('notes', { title: 'from rust', tags: ['x'], n: 1.5 })
    rust.sync()
    await js.pull()
    assert.deepEqual(js.view(id), { title: 'from rust', tags: ['x'], n: 1.5 })
    assert.equal(typeof JSON.stringify(js.doc(id)), 'string', 'no BigInt in a supamerge document')
    assert.equal(js.doc(id)._meta.schema, 0)
    // Edits from JS on a Rust entity go to its collection.
    js.change(id, d => { d.title = str('edited in js') })
    await exchange(js, rust)
    assert.equal(rust.get(id).title, 'edited in js')
    // A merge patch giving a counter a non-integer is refused by the CLI.
    js.change(id, d => { d.likes = new A.Counter(1) })
    await exchange(js, rust)
    const r = rust.run(['edit', id, '{"likes": "many"}'], { ok: false })
    assert.equal(r.status, 2)
    assert.equal(JSON.parse(r.stderr).error.kind, 'counter_patch')
    js.delete(id)
    await exchange(js, rust)
    assert.equal(rust.run(['get', id], { ok: false }).status, 1)
    assert.deepEqual(rust.json(['list', 'notes']), [])
  } finally {
    rust.remove()
  }
})

/** One raw push item, so that mistakes can be made on purpose. */
async function rawPush (supabase, ws, items) {
  return supabase.rpc('supamerge_push', { p_workspace: ws, p_changes: items })
}

function firstChange (fill, time = Date.now()) {
  const doc = A.change(A.init(), { time }, fill)
  return A.getLastLocalChange(doc)
}

function item (docId, collection, bytes, encode = b => Buffer.from(b).toString('base64')) {
  return { doc_id: docId, collection, hash: A.decodeChange(bytes).hash, bytes: encode(bytes) }
}

/** A valid first change whose standard base64 satisfies `wanted`. */
function firstChangeWhose (wanted) {
  for (let i = 0; i < 64; i++) {
    const c = firstChange(d => { d._meta = { collection: str('tasks') }; d.data = { pad: str('x'.repeat(i)) } })
    if (wanted(Buffer.from(c).toString('base64'))) return c
  }
  throw new Error('no such change')
}

test('every push mistake of docs/interop.md gets its documented answer', async () => {
  const { ws } = await setup()
  const supabase = supabaseClient(env.SUPAMERGE_JS_TOKEN)
  const good = firstChange(d => { d._meta = { collection: str('tasks') }; d.data = {} })
  const reject = async (it, expected) => {
    const { data, error } = await rawPush(supabase, ws, [it])
    assert.equal(error, null)
    assert.equal(data.results[0].status, 'rejected', JSON.stringify(data))
    assert.match(data.results[0].reason, expected)
  }
  const hex = b => Buffer.from(b).toString('hex')
  await reject(item(uuidv7(), 'tasks', good, hex), /^bytes are hex \(they start with 856f4a83/)
  await reject(item(uuidv7(), 'tasks', good, b => `\\x${hex(b)}`), /^bytes are PostgreSQL bytea hex text/)
  const withSlash = firstChangeWhose(b64 => /[+/]/.test(b64))
  await reject(item(uuidv7(), 'tasks', withSlash, b => Buffer.from(b).toString('base64url')), /^bytes use the URL-safe base64 alphabet/)
  const padded = firstChangeWhose(b64 => b64.endsWith('='))
  await reject(item(uuidv7(), 'tasks', padded, b => Buffer.from(b).toString('base64').replace(/=+$/, '')),
    /^bytes are base64 without padding/)
  await reject(item(uuidv7(), 'tasks', good, b => `${Buffer.from(b).toString('base64')}!`), /^bytes are not valid standard base64/)
  await reject({ doc_id: uuidv7(), collection: 'tasks', hash: '0'.repeat(64), bytes: 'AQID' }, /^not an Automerge chunk/)
  await reject(item(uuidv7(), 'tasks', firstChange(d => { d.title = 'x' })),
    /the first change of a document must create the map _meta/)
  await reject(item(uuidv7(), 'tasks', firstChange(d => { d._meta = { collection: 'tasks' } })),
    /_meta\.collection must be a scalar string, not a text object \(in JavaScript: new ImmutableString/)
  await reject(item(uuidv7(), 'tasks', firstChange(d => { d._meta = { collection: 7 } })),
    /_meta\.collection must be a scalar string$/)
  await reject(item(uuidv7(), 'tasks', firstChange(d => { d._meta = { deleted: false } })),
    /must set _meta\.collection/)
  await reject(item(uuidv7(), 'notes', good), /_meta\.collection of document .* is "tasks" but the change is pushed to "notes"/)

  // The collection the server holds a document under.
  const docId = uuidv7()
  let doc = A.change(A.init(), { time: Date.now() }, d => { d._meta = { collection: str('tasks') }; d.data = { n: 1 } })
  const { data: stored } = await rawPush(supabase, ws, [item(docId, 'tasks', A.getLastLocalChange(doc))])
  assert.equal(stored.results[0].status, 'stored')
  doc = A.change(doc, { time: Date.now() }, d => { d.data.n = 2 })
  await reject(item(docId, 'notes', A.getLastLocalChange(doc)), /is stored under collection "tasks"; this change is pushed to "notes"/)

  // Whole-request mistakes.
  const extra = await rawPush(supabase, ws, [{ ...item(uuidv7(), 'tasks', good), seq: 1 }])
  assert.equal(extra.status, 400)
  assert.equal(extra.error.code, '22023')
  assert.match(extra.error.message, /change 0 has the unknown field "seq"/)
  const wrongNames = await supabase.rpc('supamerge_pull', { workspace: ws, cursor: '', limit: 10 })
  assert.equal(wrongNames.status, 404)
  assert.equal(wrongNames.error.code, 'PGRST202')
  const badUuid = await supabase.rpc('supamerge_pull', { p_workspace: 'abc', p_cursor: '', p_limit: 10 })
  assert.equal(badUuid.status, 400)
  assert.equal(badUuid.error.code, '22P02')
  const anon = await supabaseClient(null).rpc('supamerge_pull', { p_workspace: ws, p_cursor: '', p_limit: 10 })
  assert.equal(anon.status, 401)
  const foreign = await supabase.rpc('supamerge_pull', { p_workspace: uuidv7(), p_cursor: '', p_limit: 10 })
  assert.equal(foreign.status, 403)
  assert.equal(foreign.error.message, 'workspace not found or access denied')

  // Workspaces: the server picks the id; the same request key (a retry
  // after a lost answer) gives back the same workspace, a new key a new one.
  const client = new SupamergeClient(supabase)
  const key = crypto.randomUUID()
  const first = await client.createWorkspace('retried', key)
  assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  assert.equal(await client.createWorkspace('retried', key), first)
  assert.notEqual(await client.createWorkspace('retried'), first)
  const oldArgs = await supabase.rpc('supamerge_create_workspace', { p_workspace: uuidv7(), p_name: 'x' })
  assert.equal(oldArgs.status, 404)
  assert.equal(oldArgs.error.code, 'PGRST202')

  // What was stored reads as documented.
  const page = await supabase.rpc('supamerge_pull', { p_workspace: ws, p_cursor: '', p_limit: 10 })
  assert.equal(page.data.v, 1)
  assert.deepEqual(page.data.changes.map(c => [c.doc_id, c.collection]), [[docId, 'tasks']])
  assert.deepEqual(lwwView(A.applyChanges(A.init(), [Buffer.from(page.data.changes[0].bytes, 'base64')])[0]), { n: 1 })
})
