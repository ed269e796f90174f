-- supamerge: server-side compaction of the change log (issue 17).
--
-- Applies on top of 20261122000000_supamerge.sql (apply every file of
-- supabase/migrations/ in name order; `supabase db push` does):
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction -f 20261201000000_supamerge_prune.sql
--
-- Contents:
--   workspaces.pruned_seq   the horizon cursor: the highest pruned sequence
--                           number of the workspace (0: nothing pruned);
--   supamerge_private.pruned_changes
--                           per document, the hashes of its pruned changes
--                           (sorted, 32 bytes each) and its collection: what
--                           deduplication, the collection rule and the
--                           snapshot digest still need of a pruned change;
--   public.supamerge_prune(p_older_than interval, p_workspace uuid)
--                           the operator's compaction (service role and the
--                           owner only; docs/operations.md, "Compaction");
--   supamerge_push, supamerge_pull, supamerge_put_snapshot
--                           replaced: push deduplicates against pruned
--                           hashes and keeps a pruned document's collection;
--                           pull answers PT410 (HTTP 410, hint
--                           supamerge:cursor_pruned) to a log pull whose
--                           cursor is behind the horizon; a snapshot's digest
--                           counts the document's pruned changes.
--
-- A change is pruned when it is folded into its document's stored snapshot
-- (seq <= snapshots.covers_seq: the snapshot's recorded digest includes it)
-- and was pushed at least p_older_than ago. A client whose cursor is behind
-- the horizon re-bootstraps from the snapshots and keeps its unpushed work
-- (docs/protocol.md, "Pruned log").
--
-- The conventions of 20261122000000_supamerge.sql hold here too: a fixed
-- search_path on every function, schema-qualified tables, private tables in
-- supamerge_private with RLS on and no grants.

alter table public.workspaces
  add column if not exists pruned_seq bigint not null default 0 check (pruned_seq >= 0);

create table if not exists supamerge_private.pruned_changes (
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  doc_id       uuid not null,
  -- The collection the document's changes were stored under.
  collection   text not null,
  -- The 32-byte hashes of the document's pruned changes, sorted, each once.
  hashes       bytea not null check (octet_length(hashes) % 32 = 0),
  pruned_at    timestamptz not null default now(),
  primary key (workspace_id, doc_id)
);
-- Random hashes do not compress: store them out of line uncompressed, so
-- that substring() reads only the slice it needs (was_pruned's binary search).
alter table supamerge_private.pruned_changes alter column hashes set storage external;
revoke all on table supamerge_private.pruned_changes from public, anon, authenticated;
alter table supamerge_private.pruned_changes enable row level security;

-- The i-th (from 0) hash of a sorted hash list.
create or replace function supamerge_private.hash_at(p_hashes bytea, p_i bigint) returns bytea
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select substring(p_hashes from (p_i * 32 + 1)::int for 32)
$$;

-- The sorted union of two sorted hash lists.
create or replace function supamerge_private.merge_hashes(p_a bytea, p_b bytea) returns bytea
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select coalesce(string_agg(x.h, ''::bytea order by x.h), ''::bytea)
    from (select supamerge_private.hash_at(p_a, i) as h
            from generate_series(0, octet_length(coalesce(p_a, ''::bytea)) / 32 - 1) i
          union
          select supamerge_private.hash_at(p_b, i)
            from generate_series(0, octet_length(coalesce(p_b, ''::bytea)) / 32 - 1) i) x
$$;

-- Whether a change of a document was stored and pruned: a binary search in
-- the document's sorted hash list, reading 32 bytes per step.
create or replace function supamerge_private.was_pruned(p_workspace uuid, p_doc uuid, p_hash bytea)
returns boolean
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  v_lo  bigint := 0;
  v_hi  bigint;
  v_mid bigint;
  v_h   bytea;
begin
  select octet_length(p.hashes) / 32 - 1 into v_hi
    from supamerge_private.pruned_changes p
   where p.workspace_id = p_workspace and p.doc_id = p_doc;
  if v_hi is null then
    return false;
  end if;
  while v_lo <= v_hi loop
    v_mid := (v_lo + v_hi) / 2;
    select substring(p.hashes from (v_mid * 32 + 1)::int for 32) into v_h
      from supamerge_private.pruned_changes p
     where p.workspace_id = p_workspace and p.doc_id = p_doc;
    if v_h = p_hash then
      return true;
    elsif v_h < p_hash then
      v_lo := v_mid + 1;
    else
      v_hi := v_mid - 1;
    end if;
  end loop;
  return false;
end
$$;

-- ---------------------------------------------------------------------------
-- The operator's compaction
-- ---------------------------------------------------------------------------

-- Prunes, in every workspace (or only p_workspace), the changes folded into
-- their document's stored snapshot (seq <= covers_seq) and pushed at least
-- p_older_than ago (an interval >= 0; '0' prunes everything folded). Their
-- hashes move to supamerge_private.pruned_changes and the workspace's
-- horizon (workspaces.pruned_seq) rises to the highest pruned seq.
-- Answers {"v":1,"workspaces":N,"pruned":N,"bytes":N,"horizons":{ws:seq}}
-- (workspaces where something was pruned, changes pruned, change bytes
-- freed). Each workspace's row is locked while it is pruned (its pushes
-- wait). Not callable by anon or authenticated users: schedule it with
-- pg_cron as the migration's owner, or call it with the service role
-- (docs/operations.md, "Compaction").
create or replace function public.supamerge_prune(p_older_than interval, p_workspace uuid default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_cutoff   timestamptz;
  v_ws       uuid;
  v_n        bigint;
  v_bytes    bigint;
  v_top      bigint;
  v_total    bigint := 0;
  v_total_b  bigint := 0;
  v_touched  int := 0;
  v_horizons jsonb := '{}'::jsonb;
begin
  -- The grants already keep users out; this also stops a user's token from
  -- reaching it through any other definer function.
  if supamerge_private.caller_uid() is not null and not supamerge_private.is_service_role() then
    raise exception 'supamerge_prune is for the service role and the database owner'
      using errcode = '42501';
  end if;
  if p_older_than is null or p_older_than < interval '0' then
    raise exception 'p_older_than must be an interval of at least 0 (e.g. ''7 days'')'
      using errcode = '22023';
  end if;
  v_cutoff := now() - p_older_than;
  for v_ws in
    select w.id from public.workspaces w
     where p_workspace is null or w.id = p_workspace
     order by w.id
  loop
    -- Serialise with this workspace's pushes and other prunes.
    perform 1 from public.workspaces w where w.id = v_ws for update;
    with doomed as (
      delete from public.changes c
       using public.snapshots s
       where c.workspace_id = v_ws and s.workspace_id = v_ws and s.doc_id = c.doc_id
         and c.seq <= s.covers_seq and c.pushed_at <= v_cutoff
      returning c.doc_id, c.collection, c.change_hash, c.seq, octet_length(c.bytes) as n
    ), per_doc as (
      select d.doc_id, min(d.collection) as collection,
             string_agg(d.change_hash, ''::bytea order by d.change_hash) as hashes
        from doomed d group by d.doc_id
    ), stored as (
      insert into supamerge_private.pruned_changes as p (workspace_id, doc_id, collection, hashes)
      select v_ws, pd.doc_id, pd.collection, pd.hashes from per_doc pd
      on conflict (workspace_id, doc_id) do update
        set hashes = supamerge_private.merge_hashes(p.hashes, excluded.hashes),
            pruned_at = now()
      returning 1
    )
    select count(*), coalesce(sum(d.n), 0), max(d.seq) into v_n, v_bytes, v_top
      from doomed d;
    if v_n > 0 then
      update public.workspaces w set pruned_seq = greatest(w.pruned_seq, v_top) where w.id = v_ws;
      v_total := v_total + v_n;
      v_total_b := v_total_b + v_bytes;
      v_touched := v_touched + 1;
      v_horizons := v_horizons || jsonb_build_object(v_ws::text, greatest(v_top, 0));
    end if;
  end loop;
  return jsonb_build_object('v', 1, 'workspaces', v_touched, 'pruned', v_total,
                            'bytes', v_total_b, 'horizons', v_horizons);
end
$$;

revoke execute on function public.supamerge_prune(interval, uuid) from public, anon, authenticated;
grant execute on function public.supamerge_prune(interval, uuid) to service_role;
revoke execute on function
  supamerge_private.hash_at(bytea, bigint),
  supamerge_private.merge_hashes(bytea, bytea),
  supamerge_private.was_pruned(uuid, uuid, bytea)
  from public, anon, authenticated;

-- ---------------------------------------------------------------------------
-- The RPC functions that see pruned changes (replacing the first migration's)
-- ---------------------------------------------------------------------------

-- As in 20261122000000_supamerge.sql, and: deduplicates against pruned
-- changes (supamerge_private.was_pruned); the collection rule also sees a
-- pruned document's collection.
create or replace function public.supamerge_push(p_workspace uuid, p_changes jsonb)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  c_max_items constant int := 1000;
  -- base64 characters of 1 MiB of bytes.
  c_max_b64   constant bigint := 1398104;
  v_uid     uuid := supamerge_private.caller_uid();
  v_count   int;
  v_b64_sum bigint := 0;
  v_item    jsonb;
  v_idx     int;
  v_seq     bigint;
  v_first   bigint;
  v_results jsonb[] := '{}';
  v_coll    text;
  v_hash    text;
  v_b64     text;
  v_bytes   bytea;
  v_reason  text;
  v_rows    int;
  v_doc     uuid;
  v_held    text;
  v_created text;
  v_extra   text;
begin
  perform supamerge_private.require_access(p_workspace, 'write');
  if p_changes is null or jsonb_typeof(p_changes) <> 'array' then
    raise exception 'p_changes must be a JSON array of changes' using errcode = '22023';
  end if;
  v_count := jsonb_array_length(p_changes);
  if v_count > c_max_items then
    raise sqlstate 'PT413' using
      message = format('batch of %s changes exceeds the limit of %s: split it', v_count, c_max_items);
  end if;

  -- Structure first: a malformed batch stores nothing.
  for v_idx in 0 .. v_count - 1 loop
    v_item := p_changes -> v_idx;
    if jsonb_typeof(v_item) is distinct from 'object' then
      raise exception 'change % is not a JSON object', v_idx using errcode = '22023';
    end if;
    if jsonb_typeof(v_item -> 'doc_id') is distinct from 'string'
       or jsonb_typeof(v_item -> 'collection') is distinct from 'string'
       or jsonb_typeof(v_item -> 'hash') is distinct from 'string'
       or jsonb_typeof(v_item -> 'bytes') is distinct from 'string' then
      raise exception 'change % must have the string fields doc_id, collection, hash and bytes', v_idx
        using errcode = '22023';
    end if;
    select k into v_extra from jsonb_object_keys(v_item) k
     where k not in ('doc_id', 'collection', 'hash', 'bytes') limit 1;
    if v_extra is not null then
      raise exception 'change % has the unknown field "%": a change has exactly doc_id, collection, hash and bytes',
        v_idx, left(v_extra, 40) using errcode = '22023';
    end if;
    if (v_item ->> 'doc_id') !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' then
      raise exception 'change %: doc_id % is not a UUID', v_idx, left(v_item ->> 'doc_id', 40)
        using errcode = '22P02';
    end if;
    v_b64_sum := v_b64_sum + length(v_item ->> 'bytes');
  end loop;
  if v_b64_sum > c_max_b64 then
    raise sqlstate 'PT413' using
      message = format('batch of about %s change bytes exceeds the limit of 1 MiB: split it', v_b64_sum / 4 * 3);
  end if;
  if v_count = 0 then
    return jsonb_build_object('v', 1, 'results', '[]'::jsonb);
  end if;

  -- Serialise pushes per workspace: commit order = seq order (gap-free cursor).
  select w.next_seq into v_seq from public.workspaces w where w.id = p_workspace for update;
  v_first := v_seq;

  for v_idx in 0 .. v_count - 1 loop
    v_item := p_changes -> v_idx;
    v_doc := (v_item ->> 'doc_id')::uuid;
    v_coll := v_item ->> 'collection';
    v_hash := lower(v_item ->> 'hash');
    v_b64 := v_item ->> 'bytes';
    v_reason := null;
    if v_coll !~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$' then
      v_reason := 'invalid collection name: 1 to 64 characters, a letter first, then letters, digits, _ . or -';
    elsif v_hash !~ '^[0-9a-f]{64}$' then
      v_reason := 'invalid hash: expected 64 hex characters';
    else
      v_reason := supamerge_private.base64_problem(v_b64);
    end if;
    if v_reason is null then
      v_bytes := decode(v_b64, 'base64');
      v_reason := supamerge_private.change_chunk_problem(v_bytes, decode(v_hash, 'hex'));
    end if;
    if v_reason is null then
      -- The collection rule (the same messages as src/entity.rs).
      -- A document whose changes were all pruned is still held under the
      -- collection its pruned changes had.
      select coalesce(
               (select c.collection from public.changes c
                 where c.workspace_id = p_workspace and c.doc_id = v_doc limit 1),
               (select p.collection from supamerge_private.pruned_changes p
                 where p.workspace_id = p_workspace and p.doc_id = v_doc))
        into v_held;
      if v_held is not null and v_held <> v_coll then
        v_reason := format('document %s is stored under collection "%s"; this change is pushed to "%s"',
                           v_doc, left(v_held, 80), left(v_coll, 80));
      else
        v_created := supamerge_private.creation_collection(v_bytes);
        if v_created like 'err:%' then
          v_reason := format('document %s: %s', v_doc, substring(v_created from 5));
        elsif v_created is not null and substring(v_created from 4) <> v_coll then
          v_reason := format('_meta.collection of document %s is "%s" but the change is pushed to "%s"',
                             v_doc, left(substring(v_created from 4), 80), left(v_coll, 80));
        end if;
      end if;
    end if;
    if v_reason is not null then
      v_results := v_results || jsonb_build_object('status', 'rejected', 'reason', v_reason);
      continue;
    end if;
    -- Deduplication also against the pruned changes (a retried push of a
    -- change stored and pruned since is already present).
    if supamerge_private.was_pruned(p_workspace, v_doc, decode(v_hash, 'hex')) then
      v_rows := 0;
    else
      insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes, pushed_by)
      values (p_workspace, v_seq, v_doc, v_coll, decode(v_hash, 'hex'), v_bytes, v_uid)
      on conflict (workspace_id, doc_id, change_hash) do nothing;
      get diagnostics v_rows = row_count;
    end if;
    if v_rows = 1 then
      v_results := v_results || jsonb_build_object('status', 'stored', 'seq', v_seq);
      v_seq := v_seq + 1;
    else
      v_results := v_results || jsonb_build_object('status', 'already_present');
    end if;
  end loop;

  if v_seq <> v_first then
    update public.workspaces w set next_seq = v_seq where w.id = p_workspace;
    -- One Realtime nudge per push that stored something (never fails the push).
    perform supamerge_private.announce_push(p_workspace, v_first, v_seq - 1);
  end if;
  return jsonb_build_object('v', 1, 'results', to_jsonb(v_results));
end
$$;

-- As in 20261122000000_supamerge.sql, and: a pull without p_skip_snapshotted
-- whose cursor is behind the workspace's horizon raises PT410 (HTTP 410) with
-- the hint supamerge:cursor_pruned and the horizon as its detail; the
-- last page's next_cursor is at least the horizon.
create or replace function public.supamerge_pull(
  p_workspace uuid, p_cursor text, p_limit int, p_skip_snapshotted boolean default false)
returns jsonb
language plpgsql stable security invoker set search_path = pg_catalog, pg_temp as $$
declare
  c_budget constant bigint := 2097152;
  v_after  bigint;
  v_limit  int := least(greatest(coalesce(p_limit, 1000), 1), 1000);
  v_skip   boolean := coalesce(p_skip_snapshotted, false);
  v_page   jsonb;
  v_kept   bigint;
  v_seen   bigint;
  v_last   bigint;
  v_max    bigint;
  v_next   bigint;
  v_horizon bigint;
begin
  perform supamerge_private.require_access(p_workspace, 'read');
  v_after := supamerge_private.parse_cursor(p_cursor);
  -- The horizon: changes up to it may have been pruned (folded into their
  -- document's snapshot). Only a bootstrap pull (p_skip_snapshotted) may
  -- start behind it: it skips what the snapshots hold anyway.
  select w.pruned_seq into v_horizon from public.workspaces w where w.id = p_workspace;
  v_horizon := coalesce(v_horizon, 0);
  if v_after < v_horizon and not v_skip then
    raise sqlstate 'PT410' using
      message = format('cursor %s is behind the horizon %s of workspace %s: changes up to the horizon '
                       'were pruned; bootstrap from the snapshots', v_after, v_horizon, p_workspace),
      hint = 'supamerge:cursor_pruned',
      detail = v_horizon::text;
  end if;

  with candidates as (
    select c.seq, c.doc_id, c.collection, c.change_hash, c.bytes
      from public.changes c
     where c.workspace_id = p_workspace
       and c.seq > v_after
       and (not v_skip or not exists (
             select 1 from public.snapshots s
              where s.workspace_id = p_workspace and s.doc_id = c.doc_id and s.covers_seq >= c.seq))
     order by c.seq
     limit v_limit + 1
  ), numbered as (
    select cand.*,
           row_number() over w as rn,
           coalesce(sum(octet_length(cand.bytes)) over (w rows between unbounded preceding and 1 preceding), 0)
             as bytes_before
      from candidates cand
    window w as (order by cand.seq)
  ), kept as (
    select * from numbered n where n.rn <= v_limit and (n.rn = 1 or n.bytes_before < c_budget)
  )
  select coalesce(jsonb_agg(jsonb_build_object(
             'seq', k.seq,
             'doc_id', k.doc_id,
             'collection', k.collection,
             'hash', encode(k.change_hash, 'hex'),
             'bytes', supamerge_private.to_base64(k.bytes)) order by k.seq), '[]'::jsonb),
         count(*),
         max(k.seq),
         (select count(*) from numbered),
         (select max(c2.seq) from public.changes c2 where c2.workspace_id = p_workspace)
    into v_page, v_kept, v_last, v_seen, v_max
    from kept k;

  if v_seen > v_kept then
    v_next := v_last;
  else
    -- Everything up to the newest visible change was returned or skipped.
    -- Pruned changes are held by snapshots: the end of the log is at
    -- least the horizon even when every change up to it is gone.
    v_next := greatest(v_after, coalesce(v_max, 0), v_horizon);
  end if;
  return jsonb_build_object(
    'v', 1,
    'changes', v_page,
    'next_cursor', case when v_next = v_after then coalesce(p_cursor, '') else v_next::text end,
    'has_more', v_seen > v_kept);
end
$$;

-- As in 20261122000000_supamerge.sql, and: the digest of what the snapshot
-- replaces counts the document's pruned changes.
create or replace function public.supamerge_put_snapshot(
  p_workspace uuid, p_doc_id uuid, p_collection text, p_heads jsonb, p_covers text, p_bytes text)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  -- base64 characters of 1 MiB of bytes.
  c_max_b64 constant bigint := 1398104;
  v_covers bigint;
  v_last   bigint;
  v_heads  jsonb;
  v_bytes  bytea;
  v_count  bigint;
  v_sha256 bytea;
  v_rows   int;
begin
  perform supamerge_private.require_access(p_workspace, 'write');
  if p_doc_id is null then
    raise exception 'p_doc_id is required' using errcode = '22023';
  end if;
  if p_collection is null or p_collection !~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$' then
    raise exception 'invalid collection name' using errcode = '22023';
  end if;
  if p_heads is null or jsonb_typeof(p_heads) <> 'array' or jsonb_array_length(p_heads) > 1000
     or exists (select 1 from jsonb_array_elements(p_heads) h
                 where jsonb_typeof(h) <> 'string' or lower(h #>> '{}') !~ '^[0-9a-f]{64}$') then
    raise exception 'p_heads must be a JSON array of 64-character hex change hashes' using errcode = '22023';
  end if;
  select coalesce(jsonb_agg(to_jsonb(lower(h #>> '{}'))), '[]'::jsonb) into v_heads
    from jsonb_array_elements(p_heads) h;
  v_covers := supamerge_private.parse_cursor(p_covers);
  if p_bytes is null or not supamerge_private.is_base64(p_bytes) then
    raise exception 'p_bytes must be standard base64' using errcode = '22023';
  end if;
  if length(p_bytes) > c_max_b64 then
    raise sqlstate 'PT413' using
      message = format('snapshot of about %s bytes exceeds the limit of 1 MiB', length(p_bytes) / 4 * 3);
  end if;
  v_bytes := decode(p_bytes, 'base64');
  if octet_length(v_bytes) > 1048576 then
    raise sqlstate 'PT413' using
      message = format('snapshot of %s bytes exceeds the limit of 1 MiB', octet_length(v_bytes));
  end if;
  if octet_length(v_bytes) < 8 or substring(v_bytes from 1 for 4) <> '\x856f4a83'::bytea then
    raise exception 'p_bytes is not an Automerge document' using errcode = '22023';
  end if;
  select w.next_seq - 1 into v_last from public.workspaces w where w.id = p_workspace;
  if v_covers > v_last then
    raise exception 'snapshot claims to cover position %, beyond the end of the log (%)', v_covers, v_last
      using errcode = '22023';
  end if;
  -- Exactly what a pull with p_skip_snapshotted leaves out for this document.
  -- Pruned changes of the document count: every one of them has a seq at
  -- or below the covers of the snapshot that let it be pruned, and a stored
  -- snapshot only ever moves forward. One statement: one view of the log
  -- and of the pruned hashes, whatever a concurrent prune does.
  select count(*), sha256(coalesce(string_agg(h.change_hash, ''::bytea order by h.change_hash), ''::bytea))
    into v_count, v_sha256
    from (select c.change_hash from public.changes c
           where c.workspace_id = p_workspace and c.doc_id = p_doc_id and c.seq <= v_covers
          union
          select supamerge_private.hash_at(p.hashes, i)
            from supamerge_private.pruned_changes p,
                 generate_series(0, octet_length(p.hashes) / 32 - 1) i
           where p.workspace_id = p_workspace and p.doc_id = p_doc_id) h;
  insert into public.snapshots as s
         (workspace_id, doc_id, collection, heads, covers_seq, replaces_count, replaces_sha256,
          bytes, updated_by)
  values (p_workspace, p_doc_id, p_collection, v_heads, v_covers, v_count, v_sha256,
          v_bytes, supamerge_private.caller_uid())
  on conflict (workspace_id, doc_id) do update
     set collection = excluded.collection,
         heads = excluded.heads,
         covers_seq = excluded.covers_seq,
         replaces_count = excluded.replaces_count,
         replaces_sha256 = excluded.replaces_sha256,
         bytes = excluded.bytes,
         updated_by = excluded.updated_by,
         updated_at = now()
   where s.covers_seq < excluded.covers_seq;
  get diagnostics v_rows = row_count;
  return jsonb_build_object('status', case when v_rows = 1 then 'stored' else 'superseded' end);
end
$$;

-- PostgREST caches the schema: tell it to reload (harmless elsewhere).
notify pgrst, 'reload schema';
