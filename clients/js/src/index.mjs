// @supamerge/client: the reference JavaScript client of supamerge
// (docs/interop.md). Push and pull over supabase-js, and the last-writer-wins
// view of an @automerge/automerge document computed as supamerge replicas do.
export {
  SECONDS_BELOW, MAX_TIME, normalizeTime, effectiveTime, hlcTime,
  EffectiveClock, lwwView, metaView, conflicts, counterPaths
} from './lww.mjs'
export { SupamergeClient, SupamergeError, Workspace, uuidv7 } from './client.mjs'
