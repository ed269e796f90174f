-- supamerge: cheaper push and pull (issue 17, "The server under load").
--
-- Applies on top of 20261122000000_supamerge.sql and
-- 20261201000000_supamerge_prune.sql (apply every file of
-- supabase/migrations/ in name order; `supabase db push` does):
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction -f 20261202000000_supamerge_fast_rpc.sql
--
-- Same contracts, same answers (docs/interop.md), less work per call:
--   supamerge_push  checks every change (base64, framing, hash, the
--                   collection its first change names) BEFORE it takes the
--                   workspace's counter row, so pushes to one workspace
--                   serialise only on what needs the lock: what the log
--                   already holds of the batch's documents (collection,
--                   duplicates, pruned hashes; three set queries), the seq
--                   numbers and one INSERT of every stored row;
--   supamerge_pull  builds its page as JSON text (no jsonb tree per change,
--                   base64 inline instead of through to_base64, whose
--                   `set search_path` keeps PostgreSQL from inlining it) and
--                   returns `json` instead of `jsonb` (the same document;
--                   its keys in the order written).
--
-- The conventions of the earlier files hold here too: a fixed search_path on
-- every function, schema-qualified tables, SECURITY DEFINER only for push,
-- execute for authenticated and service_role only.

-- As in 20261201000000_supamerge_prune.sql, with the checks that need no
-- lock done first. Answers exactly what that version answers for every
-- batch, including batches that repeat a change or a document.
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
  v_i       int;
  v_seq     bigint;
  v_first   bigint;
  v_results jsonb[] := '{}';
  v_coll    text;
  v_hash    text;
  v_b64     text;
  v_bytes   bytea;
  v_reason  text;
  v_held    text;
  v_created text;
  v_extra   text;
  v_stored  boolean;
  -- Per change (1-based, in batch order), from the checks without the lock.
  a_doc     uuid[] := '{}';
  a_coll    text[] := '{}';
  a_hash    bytea[] := '{}';
  a_bytes   bytea[] := '{}';
  a_reason  text[] := '{}';
  a_created text[] := '{}';
  -- The previous change of the same document / with the same document and
  -- hash in the batch (NULL: none).
  a_prev_doc  int[];
  a_prev_same int[];
  -- Under the lock: what the log holds of each change's document and hash.
  a_log_coll  text[];
  a_in_log    boolean[];
  a_pruned    boolean[];
  -- Carried along the batch: the document's collection after change i, and
  -- whether change i or an earlier copy of it was stored by this push.
  a_coll_after text[] := '{}';
  a_same_done  boolean[] := '{}';
  -- The rows to insert.
  i_seq     bigint[] := '{}';
  i_doc     uuid[] := '{}';
  i_coll    text[] := '{}';
  i_hash    bytea[] := '{}';
  i_bytes   bytea[] := '{}';
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
    if (v_item - array['doc_id', 'collection', 'hash', 'bytes']) <> '{}'::jsonb then
      select k into v_extra from jsonb_object_keys(v_item) k
       where k not in ('doc_id', 'collection', 'hash', 'bytes') limit 1;
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

  -- The checks of each change on its own (no lock): name, hash, base64,
  -- framing and hash of the chunk, and the collection a first change names.
  for v_idx in 0 .. v_count - 1 loop
    v_item := p_changes -> v_idx;
    v_coll := v_item ->> 'collection';
    v_hash := lower(v_item ->> 'hash');
    v_b64 := v_item ->> 'bytes';
    v_bytes := null;
    v_created := null;
    v_reason := null;
    if v_coll !~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$' then
      v_reason := 'invalid collection name: 1 to 64 characters, a letter first, then letters, digits, _ . or -';
    elsif v_hash !~ '^[0-9a-f]{64}$' then
      v_reason := 'invalid hash: expected 64 hex characters';
    elsif not (length(v_b64) % 4 = 0 and v_b64 ~ '^[A-Za-z0-9+/]*={0,2}$'
               and not (v_b64 ~ '^[0-9a-fA-F]+$' and lower(left(v_b64, 8)) = '856f4a83')) then
      -- base64_problem's test, inline (calling it costs ≈ 50-80 µs a
      -- change: an SQL function with a `set` clause is not inlined); it
      -- names what is wrong.
      v_reason := supamerge_private.base64_problem(v_b64);
    end if;
    if v_reason is null then
      v_bytes := decode(v_b64, 'base64');
      v_reason := supamerge_private.change_chunk_problem(v_bytes, decode(v_hash, 'hex'));
    end if;
    if v_reason is null then
      v_created := supamerge_private.creation_collection(v_bytes);
    end if;
    a_doc := a_doc || (v_item ->> 'doc_id')::uuid;
    a_coll := a_coll || v_coll;
    a_hash := a_hash || case when v_reason is null then decode(v_hash, 'hex') end;
    a_bytes := a_bytes || case when v_reason is null then v_bytes end;
    a_reason := a_reason || v_reason;
    a_created := a_created || v_created;
  end loop;
  select array_agg(x.prev_doc order by x.i), array_agg(x.prev_same order by x.i)
    into a_prev_doc, a_prev_same
    from (select u.i,
                 lag(u.i) over (partition by u.d order by u.i) as prev_doc,
                 case when u.h is not null then lag(u.i) over (partition by u.d, u.h order by u.i) end
                   as prev_same
            from unnest(a_doc, a_hash) with ordinality as u(d, h, i)) x;

  -- Serialise pushes per workspace: commit order = seq order (gap-free cursor).
  -- Only supamerge_push inserts changes (and supamerge_prune, which takes
  -- the same lock, deletes them): what the statements below read of the
  -- log cannot change before this transaction ends.
  select w.next_seq into v_seq from public.workspaces w where w.id = p_workspace for update;
  v_first := v_seq;

  -- What the log holds of each change's document (its collection, also of
  -- a document whose changes were all pruned), whether it holds the change
  -- itself, and whether the document has pruned changes.
  select array_agg(coalesce(
           (select c.collection from public.changes c
             where c.workspace_id = p_workspace and c.doc_id = u.d limit 1),
           (select p.collection from supamerge_private.pruned_changes p
             where p.workspace_id = p_workspace and p.doc_id = u.d)) order by u.i),
         array_agg(u.h is not null and exists (
           select 1 from public.changes c
            where c.workspace_id = p_workspace and c.doc_id = u.d and c.change_hash = u.h) order by u.i),
         array_agg(u.h is not null and exists (
           select 1 from supamerge_private.pruned_changes p
            where p.workspace_id = p_workspace and p.doc_id = u.d) order by u.i)
    into a_log_coll, a_in_log, a_pruned
    from unnest(a_doc, a_hash) with ordinality as u(d, h, i);

  for v_i in 1 .. v_count loop
    v_reason := a_reason[v_i];
    v_coll := a_coll[v_i];
    -- The collection the document is held under: the log's, else the one
    -- an earlier change of this batch stored it under.
    v_held := coalesce(a_log_coll[v_i], a_coll_after[a_prev_doc[v_i]]);
    v_stored := false;
    if v_reason is null then
      -- The collection rule (the same messages as src/entity.rs).
      v_created := a_created[v_i];
      if v_held is not null and v_held <> v_coll then
        v_reason := format('document %s is stored under collection "%s"; this change is pushed to "%s"',
                           a_doc[v_i], left(v_held, 80), left(v_coll, 80));
      elsif v_created like 'err:%' then
        v_reason := format('document %s: %s', a_doc[v_i], substring(v_created from 5));
      elsif v_created is not null and substring(v_created from 4) <> v_coll then
        v_reason := format('_meta.collection of document %s is "%s" but the change is pushed to "%s"',
                           a_doc[v_i], left(substring(v_created from 4), 80), left(v_coll, 80));
      end if;
    end if;
    if v_reason is not null then
      v_results := v_results || jsonb_build_object('status', 'rejected', 'reason', v_reason);
    elsif a_in_log[v_i]
          or coalesce(a_same_done[a_prev_same[v_i]], false)
          -- Deduplication also against the pruned changes (a retried push
          -- of a change stored and pruned since is already present).
          or (a_pruned[v_i] and supamerge_private.was_pruned(p_workspace, a_doc[v_i], a_hash[v_i])) then
      v_results := v_results || jsonb_build_object('status', 'already_present');
    else
      i_seq := i_seq || v_seq;
      i_doc := i_doc || a_doc[v_i];
      i_coll := i_coll || v_coll;
      i_hash := i_hash || a_hash[v_i];
      i_bytes := i_bytes || a_bytes[v_i];
      v_results := v_results || jsonb_build_object('status', 'stored', 'seq', v_seq);
      v_seq := v_seq + 1;
      v_stored := true;
      if v_held is null then
        v_held := v_coll;
      end if;
    end if;
    a_coll_after[v_i] := v_held;
    a_same_done[v_i] := v_stored or coalesce(a_same_done[a_prev_same[v_i]], false);
  end loop;

  if v_seq <> v_first then
    -- No ON CONFLICT: under the lock, a duplicate here would be a bug, and
    -- it fails the push instead of leaving a gap in the seq numbers.
    insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes, pushed_by)
    select p_workspace, u.s, u.d, u.c, u.h, u.b, v_uid
      from unnest(i_seq, i_doc, i_coll, i_hash, i_bytes) as u(s, d, c, h, b);
    update public.workspaces w set next_seq = v_seq where w.id = p_workspace;
    -- One Realtime nudge per push that stored something (never fails the push).
    perform supamerge_private.announce_push(p_workspace, v_first, v_seq - 1);
  end if;
  return jsonb_build_object('v', 1, 'results', to_jsonb(v_results));
end
$$;

-- As in 20261201000000_supamerge_prune.sql (the same page, cursor, horizon
-- and PT410), returning `json`: the page is written as JSON text, one
-- string per change, with its base64 inline. Every field is a number, a
-- UUID, a hex or base64 string, or a collection name (letters, digits,
-- `_ . -`, checked by the table), so nothing needs escaping; the collection
-- still goes through to_json.
drop function if exists public.supamerge_pull(uuid, text, int, boolean);
create function public.supamerge_pull(
  p_workspace uuid, p_cursor text, p_limit int, p_skip_snapshotted boolean default false)
returns json
language plpgsql stable security invoker set search_path = pg_catalog, pg_temp as $$
declare
  c_budget constant bigint := 2097152;
  v_after  bigint;
  v_limit  int := least(greatest(coalesce(p_limit, 1000), 1), 1000);
  v_skip   boolean := coalesce(p_skip_snapshotted, false);
  v_page   text;
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
  select string_agg(
             '{"seq":' || k.seq
             || ',"doc_id":"' || k.doc_id
             || '","collection":' || to_json(k.collection)::text
             || ',"hash":"' || encode(k.change_hash, 'hex')
             || '","bytes":"' || replace(encode(k.bytes, 'base64'), E'\n', '')
             || '"}', ',' order by k.seq),
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
  return ('{"v":1,"changes":[' || coalesce(v_page, '')
          || '],"next_cursor":' || to_json(case when v_next = v_after then coalesce(p_cursor, '')
                                               else v_next::text end)::text
          || ',"has_more":' || case when v_seen > v_kept then 'true' else 'false' end
          || '}')::json;
end
$$;

revoke execute on function public.supamerge_pull(uuid, text, int, boolean) from public, anon;
grant execute on function public.supamerge_pull(uuid, text, int, boolean) to authenticated, service_role;

-- PostgREST caches the schema: tell it to reload (harmless elsewhere).
notify pgrst, 'reload schema';
