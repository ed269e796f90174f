-- supamerge: the server side of the sync protocol, for Supabase (PostgreSQL 15+).
--
-- Deploy as it is: `supabase db push`, or
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction -f 20261122000000_supamerge.sql
-- On a plain PostgreSQL apply supabase/local/supabase_standin.sql first (roles
-- and auth.uid()); never apply the stand-in to a Supabase project.
--
-- Contents:
--   tables     workspaces (with the per-workspace sequence counter),
--              workspace_members, workspace_removals, workspace_invites,
--              changes, snapshots — RLS on all of them;
--   RPC        supamerge_create_workspace, supamerge_list_workspaces,
--              supamerge_list_members, supamerge_add_member,
--              supamerge_set_role, supamerge_remove_member,
--              supamerge_leave_workspace, supamerge_create_invite,
--              supamerge_list_invites, supamerge_revoke_invite,
--              supamerge_accept_invite, supamerge_push, supamerge_pull,
--              supamerge_put_snapshot, supamerge_get_snapshots
--              (each returns one jsonb document; bytes travel as base64 text);
--   private    schema supamerge_private: access checks, cursor parsing and the
--              Automerge change-chunk verification (not exposed by the API).
--
-- Gap-free cursor: supamerge_push locks the workspace row (FOR UPDATE) and takes
-- its sequence numbers from workspaces.next_seq, so within a workspace commit
-- order equals seq order and `seq > cursor` never skips a late committer.
-- See docs/operations.md.
--
-- Conventions every function here follows (docs/operations.md, "Security
-- model"; tests/server_security.rs lints them on the migrated database):
--   * `set search_path = pg_catalog, pg_temp` on EVERY function. With pg_temp
--     named last, a session's temporary schema is searched after pg_catalog
--     for types and relations (left out, PostgreSQL searches it FIRST: a
--     caller's `create domain pg_temp.uuid ... check (...)` would then run
--     its own code inside a SECURITY DEFINER function, as the owner).
--     Functions and operators are never looked up in pg_temp.
--   * every table is schema-qualified (public.x); types not in pg_catalog
--     would be too (there are none).
--   * SECURITY DEFINER functions take the caller's identity from
--     supamerge_private.caller_uid(), never from a function whose own
--     search_path the migration does not control.
--   * membership changes call supamerge_private.lock_membership() FIRST: it
--     locks the workspace row, then checks the caller's role, so two changes
--     of one workspace's members run one after the other.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

create table public.workspaces (
  id          uuid primary key,
  name        text not null check (char_length(name) between 1 and 200),
  -- NULL when created with the service role.
  created_by  uuid,
  -- The creator's idempotency key (supamerge_create_workspace's p_request):
  -- a retried call finds the workspace it created instead of a second one.
  create_request uuid,
  created_at  timestamptz not null default now(),
  -- The next sequence number of this workspace's change log. The row is locked
  -- by every push: this is what makes the pull cursor gap-free.
  next_seq    bigint not null default 1 check (next_seq > 0)
);
-- One workspace per (creator, request key); the service role's NULL creator
-- counts as one creator.
create unique index workspaces_create_request_idx
  on public.workspaces (created_by, create_request) nulls not distinct
  where create_request is not null;

create table public.workspace_members (
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  -- auth.users(id) on Supabase; no foreign key so the schema also runs on a
  -- plain PostgreSQL with the stand-in.
  user_id      uuid not null,
  role         text not null check (role in ('owner', 'writer', 'reader')),
  added_at     timestamptz not null default now(),
  primary key (workspace_id, user_id)
);
-- RLS filters on user_id.
create index workspace_members_user_id_idx on public.workspace_members (user_id, workspace_id);

create table public.changes (
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  seq          bigint not null check (seq > 0),
  doc_id       uuid not null,
  collection   text not null check (collection ~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$'),
  change_hash  bytea not null check (octet_length(change_hash) = 32),
  bytes        bytea not null,
  -- NULL when pushed with the service role.
  pushed_by    uuid,
  pushed_at    timestamptz not null default now(),
  -- Pull order and the RLS filter column in one index.
  primary key (workspace_id, seq),
  -- Deduplication: a re-pushed change is stored once.
  unique (workspace_id, doc_id, change_hash)
);

create table public.snapshots (
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  doc_id       uuid not null,
  collection   text not null check (collection ~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$'),
  -- JSON array of 64-character lower-case hex change hashes.
  heads        jsonb not null check (jsonb_typeof(heads) = 'array'),
  -- The snapshot holds every change of this document with seq <= covers_seq.
  covers_seq   bigint not null check (covers_seq >= 0),
  -- What the snapshot replaces, computed here when it was stored: how many
  -- changes of this document have seq <= covers_seq, and the SHA-256 of
  -- their 32-byte hashes sorted and concatenated. A client loads the
  -- snapshot and trusts it only when its own changes give the same digest.
  replaces_count  bigint not null check (replaces_count >= 0),
  replaces_sha256 bytea not null check (octet_length(replaces_sha256) = 32),
  -- At most 1 MiB (supamerge_put_snapshot refuses more with PT413).
  bytes        bytea not null check (octet_length(bytes) <= 1048576),
  updated_by   uuid,
  updated_at   timestamptz not null default now(),
  primary key (workspace_id, doc_id)
);

-- Who was a member and is no longer (removed by an owner, or left). Only
-- consulted when a user without a membership calls: such a caller gets
-- "no longer a member of workspace W" (42501 with the hint
-- supamerge:not_a_member) instead of the anonymous "not found or access
-- denied", so its replicas can stop syncing that workspace and say why. It
-- tells a former member nothing they did not know. Joining again (an owner
-- adds them, or an invitation) deletes the row.
create table public.workspace_removals (
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  user_id      uuid not null,
  reason       text not null check (reason in ('removed', 'left')),
  removed_by   uuid,
  removed_at   timestamptz not null default now(),
  primary key (workspace_id, user_id)
);

-- Invitations. The code (`smi_` + 22 base64url characters: the 122 random
-- bits of a gen_random_uuid()) is returned once by supamerge_create_invite
-- and never stored: only its SHA-256 is. A code is usable while it is not
-- revoked, not expired, has uses left, and its creator may still grant its
-- role (a creator who was demoted or removed invalidates what they could no
-- longer grant).
create table public.workspace_invites (
  id           uuid primary key default gen_random_uuid(),
  workspace_id uuid not null references public.workspaces (id) on delete cascade,
  code_sha256  bytea not null unique check (octet_length(code_sha256) = 32),
  role         text not null check (role in ('owner', 'writer', 'reader')),
  created_by   uuid,
  created_at   timestamptz not null default now(),
  expires_at   timestamptz not null,
  max_uses     int not null check (max_uses between 1 and 10000),
  uses         int not null default 0 check (uses >= 0 and uses <= max_uses),
  revoked_at   timestamptz
);
create index workspace_invites_workspace_idx on public.workspace_invites (workspace_id, created_at);

-- ---------------------------------------------------------------------------
-- Privileges and row-level security
-- ---------------------------------------------------------------------------
-- Clients never write tables directly: every write goes through the RPC
-- functions, which verify hashes and take sequence numbers. Members may read
-- their workspaces' rows (RLS); anon may do nothing.

revoke all on table public.workspaces, public.workspace_members, public.changes, public.snapshots
  from anon, authenticated, public;
grant select on table public.workspaces, public.workspace_members, public.changes, public.snapshots
  to authenticated;

alter table public.workspaces enable row level security;
alter table public.workspace_members enable row level security;
alter table public.changes enable row level security;
alter table public.snapshots enable row level security;

-- Removals and invitations are read and written by the RPC functions only
-- (invitations hold code hashes; nobody reads them directly).
revoke all on table public.workspace_removals, public.workspace_invites
  from anon, authenticated, public;
alter table public.workspace_removals enable row level security;
alter table public.workspace_invites enable row level security;

-- A user sees their own memberships (no policy refers back to workspaces, so
-- there is no recursion).
create policy workspace_members_select_own on public.workspace_members
  for select to authenticated
  using (user_id = (select auth.uid()));

create policy workspaces_select_member on public.workspaces
  for select to authenticated
  using (id in (select m.workspace_id from public.workspace_members m
                where m.user_id = (select auth.uid())));

create policy changes_select_member on public.changes
  for select to authenticated
  using (workspace_id in (select m.workspace_id from public.workspace_members m
                          where m.user_id = (select auth.uid())));

create policy snapshots_select_member on public.snapshots
  for select to authenticated
  using (workspace_id in (select m.workspace_id from public.workspace_members m
                          where m.user_id = (select auth.uid())));

-- ---------------------------------------------------------------------------
-- Private helpers (schema not exposed by the API)
-- ---------------------------------------------------------------------------

create schema if not exists supamerge_private;
revoke all on schema supamerge_private from public;
grant usage on schema supamerge_private to authenticated, service_role;

-- Whether the request runs as the service role (PostgREST set the role from
-- a verified JWT's role claim).
create or replace function supamerge_private.is_service_role() returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$
  select coalesce(current_setting('role', true), '') = 'service_role'
$$;

-- The calling user's id (the `sub` claim PostgREST put in
-- request.jwt.claims), or NULL without a user token. The same value as
-- Supabase's auth.uid(), read here so that the SECURITY DEFINER functions do
-- not depend on how the host defines auth.uid() (its search_path).
create or replace function supamerge_private.caller_uid() returns uuid
language sql stable set search_path = pg_catalog, pg_temp as $$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;

-- Checks that the caller may act on a workspace and returns their role
-- ('owner' | 'writer' | 'reader', or 'service_role').
-- p_need: 'read', 'write' or 'owner'. An unknown workspace and a workspace the
-- caller is not a member of raise the identical error: nothing leaks.
create or replace function supamerge_private.require_access(p_workspace uuid, p_need text)
returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid  uuid := supamerge_private.caller_uid();
  v_role text;
begin
  if supamerge_private.is_service_role() then
    if exists (select 1 from public.workspaces w where w.id = p_workspace) then
      return 'service_role';
    end if;
    raise exception 'workspace not found or access denied' using errcode = '42501';
  end if;
  if v_uid is null then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  select m.role into v_role
    from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = v_uid;
  if v_role is null then
    -- A former member is told so (it knew the workspace exists): its
    -- replicas stop syncing it and say why (docs/workspaces.md).
    if exists (select 1 from public.workspace_removals r
                where r.workspace_id = p_workspace and r.user_id = v_uid) then
      raise exception 'no longer a member of workspace %', p_workspace
        using errcode = '42501', hint = 'supamerge:not_a_member';
    end if;
    raise exception 'workspace not found or access denied' using errcode = '42501';
  end if;
  if p_need = 'write' and v_role = 'reader' then
    raise exception 'readers cannot write to this workspace' using errcode = '42501';
  end if;
  if p_need = 'owner' and v_role <> 'owner' then
    raise exception 'only an owner of the workspace can do this' using errcode = '42501';
  end if;
  return v_role;
end
$$;

-- Serialises the membership changes of a workspace, then checks the caller.
-- Locks the workspace row (FOR NO KEY UPDATE: it conflicts with itself and
-- with a push's FOR UPDATE) and only then reads the caller's role, so a
-- change that waited sees every membership change committed before it: two
-- owners demoting each other, or both leaving, run one after the other and
-- the second sees that it would remove the last owner. Every function that
-- adds, removes or changes members calls this first, before reading any
-- member row. An unknown workspace raises the same 42501 as a foreign one.
create or replace function supamerge_private.lock_membership(p_workspace uuid, p_need text)
returns text
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform 1 from public.workspaces w where w.id = p_workspace for no key update;
  return supamerge_private.require_access(p_workspace, p_need);
end
$$;

-- Parses a cursor: '' or NULL is the start (0), otherwise the decimal seq of
-- the last change the client has.
create or replace function supamerge_private.parse_cursor(p_cursor text) returns bigint
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if p_cursor is null or p_cursor = '' then
    return 0;
  end if;
  if p_cursor !~ '^[0-9]{1,18}$' then
    raise exception 'invalid cursor %: expected the decimal cursor this server issued', left(p_cursor, 40)
      using errcode = '22023';
  end if;
  return p_cursor::bigint;
end
$$;

-- Whether text is canonical standard base64 (so decode() cannot fail).
create or replace function supamerge_private.is_base64(p_text text) returns boolean
language sql immutable strict set search_path = pg_catalog, pg_temp as $$
  select length(p_text) % 4 = 0 and p_text ~ '^[A-Za-z0-9+/]*={0,2}$'
$$;

-- Base64 without the line breaks encode() inserts every 76 characters.
create or replace function supamerge_private.to_base64(p_bytes bytea) returns text
language sql immutable strict set search_path = pg_catalog, pg_temp as $$
  select translate(encode(p_bytes, 'base64'), E'\n', '')
$$;

-- Why text given for bytes is not standard base64, naming the encoding it
-- looks like (hex, PostgreSQL's \x bytea text, URL-safe base64, unpadded
-- base64). NULL when it is standard base64 (RFC 4648 §4, padded).
create or replace function supamerge_private.base64_problem(p_text text) returns text
language sql immutable strict set search_path = pg_catalog, pg_temp as $$
  select case
    when supamerge_private.is_base64(p_text)
         and not (p_text ~ '^[0-9a-fA-F]+$' and lower(left(p_text, 8)) = '856f4a83') then null
    when p_text ~ '^\\x[0-9a-fA-F]*$' then
      'bytes are PostgreSQL bytea hex text (\x...), not base64: send the change bytes as standard base64'
    when p_text ~ '^[0-9a-fA-F]+$' and lower(left(p_text, 8)) = '856f4a83' then
      'bytes are hex (they start with 856f4a83, the Automerge magic), not base64: send the change bytes as standard base64'
    when p_text ~ '^[A-Za-z0-9_-]+=*$' and p_text ~ '[_-]' then
      'bytes use the URL-safe base64 alphabet (- and _): send standard base64 (+ and /, padded with =)'
    when p_text ~ '^[A-Za-z0-9+/]+$' then
      'bytes are base64 without padding: pad with = to a multiple of 4 characters'
    else 'bytes are not valid standard base64 (RFC 4648 section 4, padded with =)'
  end
$$;

-- Reads an unsigned LEB128 number at 0-based offset p_pos (at most 63 bits).
create or replace function supamerge_private.read_uleb(
  p_bytes bytea, p_pos int, out o_value bigint, out o_next int)
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  v_b     int;
  v_shift int := 0;
begin
  o_value := 0;
  o_next := p_pos;
  loop
    if o_next >= octet_length(p_bytes) or v_shift > 56 then
      raise exception 'malformed LEB128 number' using errcode = '22P03';
    end if;
    v_b := get_byte(p_bytes, o_next);
    o_value := o_value | ((v_b & 127)::bigint << v_shift);
    o_next := o_next + 1;
    exit when v_b & 128 = 0;
    v_shift := v_shift + 7;
  end loop;
end
$$;

-- Reads a signed LEB128 number at 0-based offset p_pos (at most 63 bits).
create or replace function supamerge_private.read_sleb(
  p_bytes bytea, p_pos int, out o_value bigint, out o_next int)
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  v_b     int;
  v_shift int := 0;
begin
  o_value := 0;
  o_next := p_pos;
  loop
    if o_next >= octet_length(p_bytes) or v_shift > 56 then
      raise exception 'malformed LEB128 number' using errcode = '22P03';
    end if;
    v_b := get_byte(p_bytes, o_next);
    o_value := o_value | ((v_b & 127)::bigint << v_shift);
    o_next := o_next + 1;
    v_shift := v_shift + 7;
    exit when v_b & 128 = 0;
  end loop;
  if v_b & 64 <> 0 and v_shift < 64 then
    o_value := o_value | (-1::bigint << v_shift);
  end if;
end
$$;

-- Decodes an Automerge RLE column (bytes p_start .. p_end - 1) of unsigned
-- numbers (p_strings = false) or of strings (true, as their UTF-8 bytes in
-- hex), nulls included: runs of a repeated value (count > 0), of literals
-- (count < 0) and of nulls (count 0, then the number of nulls).
create or replace function supamerge_private.rle_column(
  p_bytes bytea, p_start int, p_end int, p_strings boolean) returns text[]
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  v_out   text[] := '{}';
  v_pos   int := p_start;
  v_count bigint;
  v_len   bigint;
  v_val   text;
  v_k     bigint;
begin
  while v_pos < p_end loop
    select o_value, o_next into v_count, v_pos from supamerge_private.read_sleb(p_bytes, v_pos);
    if v_count = 0 then
      select o_value, o_next into v_count, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
      v_out := v_out || array_fill(null::text, array[v_count::int]);
      continue;
    end if;
    for v_k in 1 .. (case when v_count > 0 then 1 else -v_count end) loop
      if p_strings then
        select o_value, o_next into v_len, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
        if v_pos + v_len > p_end then
          raise exception 'string runs past its column' using errcode = '22P03';
        end if;
        v_val := encode(substring(p_bytes from v_pos + 1 for v_len::int), 'hex');
        v_pos := v_pos + v_len::int;
      else
        select o_value::text, o_next into v_val, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
      end if;
      if v_count > 0 then
        v_out := v_out || array_fill(v_val, array[v_count::int]);
      else
        v_out := v_out || v_val;
      end if;
    end loop;
  end loop;
  return v_out;
end
$$;

-- The collection a document's first change gives it, the rule of
-- src/entity.rs (creation_meta) for servers: for a verified change chunk,
--   NULL               the change has dependencies (not a first change);
--   'ok:' || name      it creates the map _meta with the scalar string
--                      _meta.collection = name;
--   'err:' || reason   it does not (the same reasons as src/entity.rs).
-- Decodes the change header and its op columns (object, key, action, value):
-- ops are applied in order, a later op on a key replacing an earlier one.
create or replace function supamerge_private.creation_collection(p_bytes bytea) returns text
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  c_missing_meta constant text := 'the first change of a document must create the map _meta with the scalar string _meta.collection (see docs/interop.md)';
  c_missing_coll constant text := 'the first change of a document must set _meta.collection (see docs/interop.md)';
  c_text         constant text := '_meta.collection must be a scalar string, not a text object (in JavaScript: new ImmutableString(name))';
  c_not_string   constant text := '_meta.collection must be a scalar string';
  c_undecodable  constant text := 'the first change of a document does not decode as an Automerge change';
  v_pos      int := 9;
  v_n        bigint;
  v_len      bigint;
  v_start_op bigint;
  v_k        bigint;
  v_ncols    bigint;
  v_spec     bigint;
  v_col_len  bigint;
  v_data     int;
  v_ranges   jsonb := '{}';
  v_obj_a    text[];
  v_obj_c    text[];
  v_key      text[];
  v_action   text[];
  v_meta     text[];
  v_raw      int;
  v_raw_end  int;
  v_ops      int;
  v_i        int;
  v_meta_ctr bigint;
  v_coll     text;
  v_state    text := 'missing';
  v_vmeta    bigint;
  v_vlen     int;
  v_act      bigint;
begin
  -- Most changes have dependencies: tell them apart without entering the
  -- exception block below (a subtransaction). Skip the chunk's length
  -- prefix (the framing was verified); the next byte starts the dependency
  -- count, which is not 0 when its low 7 bits are not.
  while v_pos < octet_length(p_bytes) and get_byte(p_bytes, v_pos) >= 128 loop
    v_pos := v_pos + 1;
  end loop;
  v_pos := v_pos + 1;
  if v_pos >= octet_length(p_bytes) then
    return 'err:' || c_undecodable;
  end if;
  if get_byte(p_bytes, v_pos) & 127 <> 0 then
    return null;
  end if;
  begin
    select o_value, o_next into v_n, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    if v_n <> 0 then
      return null;
    end if;
    -- actor, seq, start op, time, message, other actors
    select o_value, o_next into v_len, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    v_pos := v_pos + v_len::int;
    select o_next into v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    select o_value, o_next into v_start_op, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    select o_next into v_pos from supamerge_private.read_sleb(p_bytes, v_pos);
    select o_value, o_next into v_len, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    v_pos := v_pos + v_len::int;
    select o_value, o_next into v_n, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    for v_k in 1 .. v_n loop
      select o_value, o_next into v_len, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
      v_pos := v_pos + v_len::int;
    end loop;
    -- Op column metadata: (spec, length) pairs; the data follows in order.
    select o_value, o_next into v_ncols, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
    v_data := 0;
    for v_k in 1 .. v_ncols loop
      select o_value, o_next into v_spec, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
      select o_value, o_next into v_col_len, v_pos from supamerge_private.read_uleb(p_bytes, v_pos);
      if v_spec & 8 <> 0 then
        return 'err:' || c_undecodable;
      end if;
      v_ranges := v_ranges || jsonb_build_object(v_spec::text, jsonb_build_array(v_data, v_data + v_col_len));
      v_data := v_data + v_col_len::int;
    end loop;
    if v_pos + v_data > octet_length(p_bytes) then
      return 'err:' || c_undecodable;
    end if;
    -- Columns: 1 object actor, 2 object counter, 21 key string, 66 action,
    -- 86 value metadata, 87 raw values (absent columns are all null).
    v_obj_a := supamerge_private.rle_column(p_bytes, v_pos + coalesce((v_ranges -> '1' ->> 0)::int, 0),
                 v_pos + coalesce((v_ranges -> '1' ->> 1)::int, 0), false);
    v_obj_c := supamerge_private.rle_column(p_bytes, v_pos + coalesce((v_ranges -> '2' ->> 0)::int, 0),
                 v_pos + coalesce((v_ranges -> '2' ->> 1)::int, 0), false);
    v_key := supamerge_private.rle_column(p_bytes, v_pos + coalesce((v_ranges -> '21' ->> 0)::int, 0),
                 v_pos + coalesce((v_ranges -> '21' ->> 1)::int, 0), true);
    v_action := supamerge_private.rle_column(p_bytes, v_pos + coalesce((v_ranges -> '66' ->> 0)::int, 0),
                 v_pos + coalesce((v_ranges -> '66' ->> 1)::int, 0), false);
    v_meta := supamerge_private.rle_column(p_bytes, v_pos + coalesce((v_ranges -> '86' ->> 0)::int, 0),
                 v_pos + coalesce((v_ranges -> '86' ->> 1)::int, 0), false);
    v_raw := v_pos + coalesce((v_ranges -> '87' ->> 0)::int, 0);
    v_raw_end := v_pos + coalesce((v_ranges -> '87' ->> 1)::int, 0);
    v_ops := coalesce(array_length(v_action, 1), 0);
    for v_i in 1 .. v_ops loop
      v_act := v_action[v_i]::bigint;
      v_vmeta := coalesce(v_meta[v_i]::bigint, 0);
      v_vlen := (v_vmeta >> 4)::int;
      if v_obj_a[v_i] is null and v_obj_c[v_i] is null
         and v_key[v_i] = encode(convert_to('_meta', 'UTF8'), 'hex') then
        -- An op on the root's _meta key replaces what it held.
        if v_act = 0 then
          v_meta_ctr := v_start_op + v_i - 1;
          v_state := 'no collection';
        else
          v_meta_ctr := null;
          v_state := 'missing';
        end if;
        v_coll := null;
      elsif v_meta_ctr is not null and v_obj_a[v_i] = '0' and v_obj_c[v_i]::bigint = v_meta_ctr
            and v_key[v_i] = encode(convert_to('collection', 'UTF8'), 'hex') then
        if v_act = 1 and v_vmeta & 15 = 6 then
          if v_raw + v_vlen > v_raw_end then
            return 'err:' || c_undecodable;
          end if;
          v_coll := convert_from(substring(p_bytes from v_raw + 1 for v_vlen), 'UTF8');
          v_state := 'string';
        elsif v_act = 4 then
          v_state := 'text';
        elsif v_act = 3 then
          v_state := 'no collection';
        elsif v_act <> 5 then
          v_state := 'not string';
        end if;
      end if;
      -- Every op's value takes the bytes its metadata says.
      v_raw := v_raw + v_vlen;
    end loop;
  exception when others then
    return 'err:' || c_undecodable;
  end;
  return case v_state
    when 'string' then 'ok:' || v_coll
    when 'text' then 'err:' || c_text
    when 'not string' then 'err:' || c_not_string
    when 'no collection' then 'err:' || c_missing_coll
    else 'err:' || c_missing_meta
  end;
end
$$;

-- Verifies an Automerge change chunk against the claimed hash:
--   magic 85 6f 4a 83 ‖ checksum (4) ‖ type (1 = change) ‖ uleb128 length ‖ contents,
--   hash = SHA-256(type ‖ length ‖ contents), checksum = the hash's first 4 bytes.
-- Returns NULL when valid, else the reason (the same rules as src/protocol/chunk.rs).
create or replace function supamerge_private.change_chunk_problem(p_bytes bytea, p_claimed bytea)
returns text
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  v_total int := octet_length(p_bytes);
  v_len   bigint := 0;
  v_shift int := 0;
  v_i     int := 9;  -- 0-based offset of the first length byte
  v_b     int;
  v_hash  bytea;
begin
  if v_total < 10 or substring(p_bytes from 1 for 4) <> '\x856f4a83'::bytea then
    return 'not an Automerge chunk (bad magic or too short)';
  end if;
  if get_byte(p_bytes, 8) <> 1 then
    return format('chunk type %s is not an uncompressed change (type 1)', get_byte(p_bytes, 8));
  end if;
  loop
    if v_i >= v_total or v_shift > 56 then
      return 'truncated or malformed chunk: bad length prefix';
    end if;
    v_b := get_byte(p_bytes, v_i);
    v_len := v_len | ((v_b & 127)::bigint << v_shift);
    v_i := v_i + 1;
    exit when v_b & 128 = 0;
    v_shift := v_shift + 7;
  end loop;
  if v_len <> v_total - v_i then
    return format('truncated or malformed chunk: length says %s, %s bytes follow', v_len, v_total - v_i);
  end if;
  v_hash := sha256(substring(p_bytes from 9));
  if substring(v_hash from 1 for 4) <> substring(p_bytes from 5 for 4) then
    return 'checksum mismatch';
  end if;
  if v_hash <> p_claimed then
    return format('hash mismatch: the bytes hash to %s', encode(v_hash, 'hex'));
  end if;
  return null;
end
$$;

-- The rank of a role (owner 3, writer 2, reader 1, anything else 0).
create or replace function supamerge_private.role_rank(p_role text) returns int
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select case p_role when 'owner' then 3 when 'writer' then 2 when 'reader' then 1 else 0 end
$$;

-- Whether a member of role p_inviter may hand out invitations for p_role:
-- owners (and the service role) any role, writers readers and writers,
-- readers nobody.
create or replace function supamerge_private.may_invite(p_inviter text, p_role text) returns boolean
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select case
    when p_inviter in ('owner', 'service_role') then p_role in ('owner', 'writer', 'reader')
    when p_inviter = 'writer' then p_role in ('writer', 'reader')
    else false
  end
$$;

-- The one answer for every code that cannot be used: wrong, expired, used
-- up, revoked, or granting more than its creator may now grant. Nothing in
-- it says whether a workspace or an invitation exists.
create or replace function supamerge_private.invalid_invitation() returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
begin
  raise exception 'invalid invitation code: it is wrong, expired, used up or revoked'
    using errcode = '22023', hint = 'supamerge:invalid_invitation';
end
$$;

revoke all on all functions in schema supamerge_private from public, anon;
grant execute on all functions in schema supamerge_private to authenticated, service_role;

-- ---------------------------------------------------------------------------
-- Realtime: nudges and who may receive them (docs/realtime.md)
-- ---------------------------------------------------------------------------
-- A push that stored changes announces itself with Supabase Realtime's
-- Broadcast from the database on the workspace's private channel
-- `workspace:<uuid>`, event 'changes', payload
--   {"v":1,"workspace","from_seq","to_seq","docs":[<= 50 doc ids],"docs_complete"}
-- (realtime.send adds "id"): where the log grew, never change bytes. Clients
-- pull. On Supabase the Realtime service delivers it; locally the gateway.

-- Whether the caller is a member of the workspace a Realtime topic names
-- ('workspace:' followed by the workspace id in lower case). Used by the
-- realtime.messages policies below, evaluated as the joining user
-- (SECURITY INVOKER: RLS on workspace_members shows a user their own rows).
create or replace function supamerge_private.is_topic_member(p_topic text) returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$
  select p_topic is not null and p_topic like 'workspace:%' and exists (
    select 1 from public.workspace_members m
     where m.user_id = supamerge_private.caller_uid()
       and 'workspace:' || m.workspace_id::text = p_topic)
$$;
grant execute on function supamerge_private.is_topic_member(text) to authenticated, service_role;

-- Sends the nudge of a push that stored p_from..p_to. A failing
-- realtime.send (or a database without the realtime schema) never fails
-- the push: the error becomes a WARNING, as realtime.send itself does.
-- Called by supamerge_push only (execute revoked from every API role).
create or replace function supamerge_private.announce_push(p_workspace uuid, p_from bigint, p_to bigint)
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  c_max_docs constant int := 50;
  v_docs  jsonb;
  v_count int;
begin
  if p_to < p_from then
    return;
  end if;
  select coalesce(jsonb_agg(d.doc_id order by d.doc_id) filter (where d.rn <= c_max_docs), '[]'::jsonb),
         count(*)
    into v_docs, v_count
    from (select x.doc_id, row_number() over (order by x.doc_id) as rn
            from (select distinct c.doc_id from public.changes c
                   where c.workspace_id = p_workspace and c.seq between p_from and p_to
                   order by c.doc_id limit c_max_docs + 1) x) d;
  begin
    perform realtime.send(
      jsonb_build_object('v', 1, 'workspace', p_workspace, 'from_seq', p_from, 'to_seq', p_to,
                         'docs', v_docs, 'docs_complete', v_count <= c_max_docs),
      'changes', 'workspace:' || p_workspace::text, true);
  exception
    when others then
      raise warning 'supamerge: the realtime nudge of workspace % was not sent: %', p_workspace, sqlerrm;
  end;
end
$$;
revoke all on function supamerge_private.announce_push(uuid, bigint, bigint)
  from public, anon, authenticated, service_role;

-- Realtime Authorization: members of a workspace may receive its channel's
-- broadcasts and presence, and publish their presence. Nobody may send
-- broadcasts from a client (nudges come from pushes only).
create policy supamerge_members_receive on realtime.messages
  for select to authenticated
  using (realtime.messages.extension in ('broadcast', 'presence')
         and supamerge_private.is_topic_member((select realtime.topic())));

create policy supamerge_members_presence on realtime.messages
  for insert to authenticated
  with check (realtime.messages.extension = 'presence'
              and supamerge_private.is_topic_member((select realtime.topic())));

-- ---------------------------------------------------------------------------
-- RPC: workspaces and members
-- ---------------------------------------------------------------------------

-- Creates a workspace; the server picks its id and the caller becomes its
-- owner. Returns {"workspace_id": uuid, "created": bool}. p_request is the
-- caller's idempotency key: a retry with the same key (after a lost answer)
-- returns the workspace that call created, "created": false, instead of
-- making a second one. Keys are per creator, so nobody learns anything about
-- another user's workspaces or keys, and no id can be squatted.
create or replace function public.supamerge_create_workspace(p_name text, p_request uuid default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid  uuid := supamerge_private.caller_uid();
  v_name text := btrim(coalesce(p_name, ''));
  v_id   uuid;
begin
  if v_uid is null and not supamerge_private.is_service_role() then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  if char_length(v_name) not between 1 and 200 then
    raise exception 'workspace name must be 1 to 200 characters' using errcode = '22023';
  end if;
  insert into public.workspaces (id, name, created_by, create_request)
  values (gen_random_uuid(), v_name, v_uid, p_request)
  on conflict (created_by, create_request) where create_request is not null do nothing
  returning id into v_id;
  if v_id is null then
    select w.id into v_id from public.workspaces w
     where w.created_by is not distinct from v_uid and w.create_request = p_request;
    return jsonb_build_object('workspace_id', v_id, 'created', false);
  end if;
  if v_uid is not null then
    insert into public.workspace_members (workspace_id, user_id, role)
    values (v_id, v_uid, 'owner');
  end if;
  return jsonb_build_object('workspace_id', v_id, 'created', true);
end
$$;

-- Adds a member or changes their role (owners only). Roles: owner, writer
-- (push, snapshots), reader (pull only). A workspace keeps at least one
-- owner: lock_membership serialises this with every other membership change.
create or replace function public.supamerge_add_member(p_workspace uuid, p_user uuid, p_role text)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_old text;
begin
  perform supamerge_private.lock_membership(p_workspace, 'owner');
  if p_user is null then
    raise exception 'p_user is required' using errcode = '22023';
  end if;
  if p_role is null or p_role not in ('owner', 'writer', 'reader') then
    raise exception 'invalid role %: expected owner, writer or reader', left(coalesce(p_role, 'NULL'), 40)
      using errcode = '22023';
  end if;
  select m.role into v_old from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = p_user;
  if v_old = 'owner' and p_role <> 'owner' and (
    select count(*) from public.workspace_members m
     where m.workspace_id = p_workspace and m.role = 'owner') = 1 then
    raise exception 'a workspace needs at least one owner: make another member owner first'
      using hint = 'supamerge:last_owner';
  end if;
  insert into public.workspace_members (workspace_id, user_id, role)
  values (p_workspace, p_user, p_role)
  on conflict (workspace_id, user_id) do update set role = excluded.role;
  delete from public.workspace_removals r
   where r.workspace_id = p_workspace and r.user_id = p_user;
  return jsonb_build_object('workspace_id', p_workspace, 'user_id', p_user, 'role', p_role);
end
$$;

-- The caller leaves a workspace. The last owner cannot leave while other
-- members remain (serialised with every other membership change by
-- lock_membership). A workspace nobody is a member of keeps its data.
create or replace function public.supamerge_leave_workspace(p_workspace uuid)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid  uuid := supamerge_private.caller_uid();
  v_role text;
begin
  if v_uid is null then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  v_role := supamerge_private.lock_membership(p_workspace, 'read');
  if v_role = 'owner'
     and (select count(*) from public.workspace_members m
           where m.workspace_id = p_workspace and m.role = 'owner') = 1
     and exists (select 1 from public.workspace_members m
                  where m.workspace_id = p_workspace and m.user_id <> v_uid) then
    raise exception 'the last owner cannot leave while other members remain: make another member owner first'
      using hint = 'supamerge:last_owner';
  end if;
  delete from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = v_uid;
  insert into public.workspace_removals as r (workspace_id, user_id, reason, removed_by)
  values (p_workspace, v_uid, 'left', v_uid)
  on conflict (workspace_id, user_id) do update
     set reason = excluded.reason, removed_by = excluded.removed_by, removed_at = now();
  return jsonb_build_object('workspace_id', p_workspace, 'left', true);
end
$$;

-- The caller's workspaces with the caller's role:
-- {"workspaces":[{"workspace_id","name","role","created_at"}]}, by name.
create or replace function public.supamerge_list_workspaces()
returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid uuid := supamerge_private.caller_uid();
begin
  if v_uid is null then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  return jsonb_build_object('workspaces', coalesce((
    select jsonb_agg(jsonb_build_object(
             'workspace_id', w.id, 'name', w.name, 'role', m.role, 'created_at', w.created_at)
           order by w.name, w.id)
      from public.workspace_members m
      join public.workspaces w on w.id = m.workspace_id
     where m.user_id = v_uid), '[]'::jsonb));
end
$$;

-- The members of a workspace (any member may see them):
-- {"members":[{"user_id","role","added_at"}]}.
create or replace function public.supamerge_list_members(p_workspace uuid)
returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform supamerge_private.require_access(p_workspace, 'read');
  return jsonb_build_object('members', coalesce((
    select jsonb_agg(jsonb_build_object('user_id', m.user_id, 'role', m.role, 'added_at', m.added_at)
           order by m.added_at, m.user_id)
      from public.workspace_members m
     where m.workspace_id = p_workspace), '[]'::jsonb));
end
$$;

-- Changes the role of an existing member (owners only); the last owner
-- cannot be demoted (serialised by lock_membership).
create or replace function public.supamerge_set_role(p_workspace uuid, p_user uuid, p_role text)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_old text;
begin
  perform supamerge_private.lock_membership(p_workspace, 'owner');
  if p_role is null or p_role not in ('owner', 'writer', 'reader') then
    raise exception 'invalid role %: expected owner, writer or reader', left(coalesce(p_role, 'NULL'), 40)
      using errcode = '22023';
  end if;
  select m.role into v_old from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = p_user;
  if v_old is null then
    raise exception 'user % is not a member of this workspace', p_user using errcode = '22023';
  end if;
  if v_old = 'owner' and p_role <> 'owner' and (
    select count(*) from public.workspace_members m
     where m.workspace_id = p_workspace and m.role = 'owner') = 1 then
    raise exception 'a workspace needs at least one owner: make another member owner first'
      using hint = 'supamerge:last_owner';
  end if;
  update public.workspace_members m set role = p_role
   where m.workspace_id = p_workspace and m.user_id = p_user;
  return jsonb_build_object('workspace_id', p_workspace, 'user_id', p_user, 'role', p_role);
end
$$;

-- Removes a member (owners only; the last owner cannot be removed). The
-- removed user can no longer pull or push: their calls answer "no longer a
-- member of workspace W" (workspace_removals).
create or replace function public.supamerge_remove_member(p_workspace uuid, p_user uuid)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_old text;
begin
  perform supamerge_private.lock_membership(p_workspace, 'owner');
  if p_user is null then
    raise exception 'p_user is required' using errcode = '22023';
  end if;
  select m.role into v_old from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = p_user;
  if v_old is null then
    raise exception 'user % is not a member of this workspace', p_user using errcode = '22023';
  end if;
  if v_old = 'owner' and (
    select count(*) from public.workspace_members m
     where m.workspace_id = p_workspace and m.role = 'owner') = 1 then
    raise exception 'the last owner cannot be removed: make another member owner first'
      using hint = 'supamerge:last_owner';
  end if;
  delete from public.workspace_members m
   where m.workspace_id = p_workspace and m.user_id = p_user;
  insert into public.workspace_removals as r (workspace_id, user_id, reason, removed_by)
  values (p_workspace, p_user, 'removed', supamerge_private.caller_uid())
  on conflict (workspace_id, user_id) do update
     set reason = excluded.reason, removed_by = excluded.removed_by, removed_at = now();
  return jsonb_build_object('workspace_id', p_workspace, 'user_id', p_user, 'removed', true);
end
$$;

-- Creates an invitation: {"invite_id","code","workspace_id","role",
-- "expires_at","max_uses"}. The code is in this answer only (the table
-- keeps its SHA-256). Owners may invite any role, writers readers and
-- writers, readers nobody. p_expires_in_seconds: 60 to 31536000 (a year);
-- p_max_uses: 1 to 10000.
create or replace function public.supamerge_create_invite(
  p_workspace uuid, p_role text, p_expires_in_seconds bigint default 604800, p_max_uses int default 1)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid     uuid := supamerge_private.caller_uid();
  v_role    text;
  v_code    text;
  v_id      uuid;
  v_expires timestamptz;
begin
  if v_uid is null then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  v_role := supamerge_private.require_access(p_workspace, 'read');
  if p_role is null or p_role not in ('owner', 'writer', 'reader') then
    raise exception 'invalid role %: expected owner, writer or reader', left(coalesce(p_role, 'NULL'), 40)
      using errcode = '22023';
  end if;
  if not supamerge_private.may_invite(v_role, p_role) then
    raise exception 'a % cannot invite a %: owners invite any role, writers readers and writers, readers nobody',
      v_role, p_role using errcode = '42501';
  end if;
  if p_expires_in_seconds is null or p_expires_in_seconds not between 60 and 31536000 then
    raise exception 'an invitation expires after 60 seconds to 365 days' using errcode = '22023';
  end if;
  if p_max_uses is null or p_max_uses not between 1 and 10000 then
    raise exception 'an invitation has 1 to 10000 uses' using errcode = '22023';
  end if;
  -- Bounded: at most 1000 usable invitations per workspace at a time.
  if (select count(*) from public.workspace_invites i
       where i.workspace_id = p_workspace and i.revoked_at is null
         and i.expires_at > now() and i.uses < i.max_uses) >= 1000 then
    raise exception 'this workspace has 1000 usable invitations: revoke some first';
  end if;
  v_code := 'smi_' || translate(rtrim(encode(uuid_send(gen_random_uuid()), 'base64'), '='), '+/', '-_');
  v_expires := now() + make_interval(secs => p_expires_in_seconds::double precision);
  insert into public.workspace_invites (workspace_id, code_sha256, role, created_by, expires_at, max_uses)
  values (p_workspace, sha256(convert_to(v_code, 'UTF8')), p_role, v_uid, v_expires, p_max_uses)
  returning id into v_id;
  return jsonb_build_object('invite_id', v_id, 'code', v_code, 'workspace_id', p_workspace,
                            'role', p_role, 'expires_at', v_expires, 'max_uses', p_max_uses);
end
$$;

-- The invitations of a workspace, never with codes:
-- {"invites":[{"invite_id","workspace_id","role","created_by","created_at",
-- "expires_at","max_uses","uses","state"}]}; state is active, expired,
-- used_up or revoked. Owners see all of them, writers their own, readers
-- none (42501).
create or replace function public.supamerge_list_invites(p_workspace uuid)
returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid  uuid := supamerge_private.caller_uid();
  v_role text;
begin
  v_role := supamerge_private.require_access(p_workspace, 'read');
  if v_role = 'reader' then
    raise exception 'readers cannot see or create invitations' using errcode = '42501';
  end if;
  return jsonb_build_object('invites', coalesce((
    select jsonb_agg(jsonb_build_object(
             'invite_id', i.id, 'workspace_id', i.workspace_id, 'role', i.role,
             'created_by', i.created_by, 'created_at', i.created_at, 'expires_at', i.expires_at,
             'max_uses', i.max_uses, 'uses', i.uses,
             'state', case when i.revoked_at is not null then 'revoked'
                           when i.uses >= i.max_uses then 'used_up'
                           when i.expires_at <= now() then 'expired'
                           else 'active' end)
           order by i.created_at, i.id)
      from public.workspace_invites i
     where i.workspace_id = p_workspace
       and (v_role in ('owner', 'service_role') or i.created_by = v_uid)), '[]'::jsonb));
end
$$;

-- Revokes an invitation by id (p_invite) or by code (p_code): its creator
-- (still a member) or an owner of its workspace. Anything else, including
-- an unknown id or code, answers the invalid-invitation error.
create or replace function public.supamerge_revoke_invite(p_invite uuid default null, p_code text default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid     uuid := supamerge_private.caller_uid();
  v_id      uuid;
  v_ws      uuid;
  v_creator uuid;
  v_role    text;
begin
  if v_uid is null and not supamerge_private.is_service_role() then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  if (p_invite is null) = (p_code is null) then
    raise exception 'give p_invite or p_code (one of them)' using errcode = '22023';
  end if;
  if p_invite is not null then
    select i.id, i.workspace_id into v_id, v_ws from public.workspace_invites i where i.id = p_invite;
  else
    select i.id, i.workspace_id into v_id, v_ws from public.workspace_invites i
     where i.code_sha256 = sha256(convert_to(p_code, 'UTF8'));
  end if;
  if v_id is not null then
    -- The order every membership change takes: workspace row, then invite.
    perform 1 from public.workspaces w where w.id = v_ws for no key update;
    select i.created_by into v_creator from public.workspace_invites i where i.id = v_id for update;
    if supamerge_private.is_service_role() then
      v_role := 'service_role';
    else
      select m.role into v_role from public.workspace_members m
       where m.workspace_id = v_ws and m.user_id = v_uid;
    end if;
  end if;
  if v_id is null or v_role is null
     or not (v_role in ('owner', 'service_role') or v_creator = v_uid) then
    perform supamerge_private.invalid_invitation();
  end if;
  update public.workspace_invites i set revoked_at = coalesce(i.revoked_at, now()) where i.id = v_id;
  return jsonb_build_object('invite_id', v_id, 'revoked', true);
end
$$;

-- Joins the workspace of an invitation code:
-- {"workspace_id","name","role","joined"}. A user an owner removed cannot
-- use a code (an owner adds them back); one who left can. A member whose role is already at
-- least the invitation's keeps it ("joined": false, no use taken); a lower
-- role is raised. Every unusable code gets the same error. Two joins racing
-- for the last use are serialised on the workspace row (the lock every
-- membership change takes): the second finds the code used up.
create or replace function public.supamerge_accept_invite(p_code text)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid          uuid := supamerge_private.caller_uid();
  v_hash         bytea := sha256(convert_to(coalesce(p_code, ''), 'UTF8'));
  v_ws           uuid;
  v_id           uuid;
  v_role         text;
  v_creator      uuid;
  v_expires      timestamptz;
  v_max          int;
  v_uses         int;
  v_revoked      timestamptz;
  v_creator_role text;
  v_current      text;
  v_name         text;
begin
  if v_uid is null then
    raise exception 'not authenticated: a user access token is required' using errcode = '42501';
  end if;
  select i.workspace_id into v_ws from public.workspace_invites i where i.code_sha256 = v_hash;
  if v_ws is not null then
    perform 1 from public.workspaces w where w.id = v_ws for no key update;
    select i.id, i.role, i.created_by, i.expires_at, i.max_uses, i.uses, i.revoked_at
      into v_id, v_role, v_creator, v_expires, v_max, v_uses, v_revoked
      from public.workspace_invites i where i.code_sha256 = v_hash for update;
    select m.role into v_creator_role from public.workspace_members m
     where m.workspace_id = v_ws and m.user_id = v_creator;
  end if;
  -- A user an owner removed comes back only when an owner adds them again,
  -- not with a code they may still hold (who left may come back).
  if v_id is null or v_revoked is not null or v_expires <= now() or v_uses >= v_max
     or not supamerge_private.may_invite(coalesce(v_creator_role, ''), v_role)
     or exists (select 1 from public.workspace_removals r
                 where r.workspace_id = v_ws and r.user_id = v_uid and r.reason = 'removed') then
    perform supamerge_private.invalid_invitation();
  end if;
  select w.name into v_name from public.workspaces w where w.id = v_ws;
  select m.role into v_current from public.workspace_members m
   where m.workspace_id = v_ws and m.user_id = v_uid;
  if supamerge_private.role_rank(v_current) >= supamerge_private.role_rank(v_role) then
    return jsonb_build_object('workspace_id', v_ws, 'name', v_name, 'role', v_current, 'joined', false);
  end if;
  update public.workspace_invites i set uses = i.uses + 1 where i.id = v_id;
  insert into public.workspace_members (workspace_id, user_id, role)
  values (v_ws, v_uid, v_role)
  on conflict (workspace_id, user_id) do update set role = excluded.role;
  delete from public.workspace_removals r where r.workspace_id = v_ws and r.user_id = v_uid;
  return jsonb_build_object('workspace_id', v_ws, 'name', v_name, 'role', v_role, 'joined', true);
end
$$;

-- ---------------------------------------------------------------------------
-- RPC: changes
-- ---------------------------------------------------------------------------

-- Stores a batch of changes: {"v":1,"results":[...]} with one outcome per item,
-- in order: {"status":"stored","seq":N} | {"status":"already_present"} |
-- {"status":"rejected","reason":"..."}.
-- Items: {"doc_id": uuid, "collection": text, "hash": 64 hex, "bytes": base64},
-- no other field. Item-level failures reject that item only: integrity
-- (encoding, framing, hash) and the collection rule (a document's first
-- change must create _meta with the scalar string _meta.collection equal to
-- the item's collection; every change of a document goes to the collection
-- the server holds it under). A structurally invalid batch raises (HTTP 400)
-- and stores nothing; more than 1000 items or more than 1 MiB of change
-- bytes raises PT413 (HTTP 413: split and retry). See docs/interop.md.
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
      select c.collection into v_held from public.changes c
       where c.workspace_id = p_workspace and c.doc_id = v_doc limit 1;
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
    insert into public.changes (workspace_id, seq, doc_id, collection, change_hash, bytes, pushed_by)
    values (p_workspace, v_seq, v_doc, v_coll, decode(v_hash, 'hex'), v_bytes, v_uid)
    on conflict (workspace_id, doc_id, change_hash) do nothing;
    get diagnostics v_rows = row_count;
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

-- Reads the changes after a cursor:
-- {"v":1,"changes":[{"seq","doc_id","collection","hash","bytes"}],"next_cursor":"N","has_more":bool}.
-- At most p_limit (clamped to 1..1000) changes and about 2 MiB of bytes per
-- page. With p_skip_snapshotted, changes covered by their document's current
-- snapshot are left out (bootstrap: the client fetches snapshots instead).
-- SECURITY INVOKER and STABLE: RLS applies, and every statement here reads the
-- snapshot of the calling query.
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
begin
  perform supamerge_private.require_access(p_workspace, 'read');
  v_after := supamerge_private.parse_cursor(p_cursor);

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
    v_next := greatest(v_after, coalesce(v_max, 0));
  end if;
  return jsonb_build_object(
    'v', 1,
    'changes', v_page,
    'next_cursor', case when v_next = v_after then coalesce(p_cursor, '') else v_next::text end,
    'has_more', v_seen > v_kept);
end
$$;

-- ---------------------------------------------------------------------------
-- RPC: snapshots
-- ---------------------------------------------------------------------------

-- Offers a document snapshot ({"status":"stored"|"superseded"}): one row per
-- document, replaced only by a snapshot covering more of the log. Writers only.
-- At most 1 MiB of bytes (PT413 beyond: the client skips the upload). The
-- contents cannot be checked here (no Automerge in SQL); instead the row
-- records what the snapshot replaces (replaces_count / replaces_sha256, see
-- the snapshots table), and a reader trusts the snapshot only when it holds
-- exactly those changes.
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
  select count(*), sha256(coalesce(string_agg(c.change_hash, ''::bytea order by c.change_hash), ''::bytea))
    into v_count, v_sha256
    from public.changes c
   where c.workspace_id = p_workspace and c.doc_id = p_doc_id and c.seq <= v_covers;
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

-- Reads a page of snapshots in doc_id order. p_version 2 (what current
-- clients ask for) adds what each snapshot replaces:
-- {"v":2,"snapshots":[{"doc_id","collection","heads","covers","bytes",
--   "replaces":{"count":N,"sha256":"64 hex"}}],"has_more":bool};
-- p_version 1 (the default: clients from before the digest) gets the same
-- page without "replaces", as "v":1.
-- At most p_limit (clamped to 1..1000) snapshots and about 2 MiB per page
-- (a snapshot is at most 1 MiB, so a page stays under about 3 MiB).
create or replace function public.supamerge_get_snapshots(
  p_workspace uuid, p_after uuid default null, p_limit int default 100, p_version int default 1)
returns jsonb
language plpgsql stable security invoker set search_path = pg_catalog, pg_temp as $$
declare
  c_budget constant bigint := 2097152;
  v_limit  int := least(greatest(coalesce(p_limit, 100), 1), 1000);
  v_digest boolean;
  v_page   jsonb;
  v_kept   bigint;
  v_seen   bigint;
begin
  perform supamerge_private.require_access(p_workspace, 'read');
  if p_version is null or p_version not in (1, 2) then
    raise exception 'unsupported snapshot page version %: this server speaks 1 and 2', p_version
      using errcode = '22023';
  end if;
  v_digest := p_version >= 2;
  with candidates as (
    select s.doc_id, s.collection, s.heads, s.covers_seq, s.replaces_count, s.replaces_sha256, s.bytes
      from public.snapshots s
     where s.workspace_id = p_workspace
       and (p_after is null or s.doc_id > p_after)
     order by s.doc_id
     limit v_limit + 1
  ), numbered as (
    select cand.*,
           row_number() over w as rn,
           coalesce(sum(octet_length(cand.bytes)) over (w rows between unbounded preceding and 1 preceding), 0)
             as bytes_before
      from candidates cand
    window w as (order by cand.doc_id)
  ), kept as (
    select * from numbered n where n.rn <= v_limit and (n.rn = 1 or n.bytes_before < c_budget)
  )
  select coalesce(jsonb_agg(jsonb_build_object(
             'doc_id', k.doc_id,
             'collection', k.collection,
             'heads', k.heads,
             'covers', k.covers_seq::text,
             'bytes', supamerge_private.to_base64(k.bytes))
           || case when v_digest
                   then jsonb_build_object('replaces', jsonb_build_object(
                          'count', k.replaces_count,
                          'sha256', encode(k.replaces_sha256, 'hex')))
                   else '{}'::jsonb end
           order by k.doc_id), '[]'::jsonb),
         count(*),
         (select count(*) from numbered)
    into v_page, v_kept, v_seen
    from kept k;
  return jsonb_build_object('v', p_version, 'snapshots', v_page, 'has_more', v_seen > v_kept);
end
$$;

-- ---------------------------------------------------------------------------
-- Function privileges: authenticated users (and the service role) only.
-- ---------------------------------------------------------------------------

revoke execute on function
  public.supamerge_create_workspace(text, uuid),
  public.supamerge_add_member(uuid, uuid, text),
  public.supamerge_leave_workspace(uuid),
  public.supamerge_list_workspaces(),
  public.supamerge_list_members(uuid),
  public.supamerge_set_role(uuid, uuid, text),
  public.supamerge_remove_member(uuid, uuid),
  public.supamerge_create_invite(uuid, text, bigint, int),
  public.supamerge_list_invites(uuid),
  public.supamerge_revoke_invite(uuid, text),
  public.supamerge_accept_invite(text),
  public.supamerge_push(uuid, jsonb),
  public.supamerge_pull(uuid, text, int, boolean),
  public.supamerge_put_snapshot(uuid, uuid, text, jsonb, text, text),
  public.supamerge_get_snapshots(uuid, uuid, int, int)
  from public, anon;

grant execute on function
  public.supamerge_create_workspace(text, uuid),
  public.supamerge_add_member(uuid, uuid, text),
  public.supamerge_leave_workspace(uuid),
  public.supamerge_list_workspaces(),
  public.supamerge_list_members(uuid),
  public.supamerge_set_role(uuid, uuid, text),
  public.supamerge_remove_member(uuid, uuid),
  public.supamerge_create_invite(uuid, text, bigint, int),
  public.supamerge_list_invites(uuid),
  public.supamerge_revoke_invite(uuid, text),
  public.supamerge_accept_invite(text),
  public.supamerge_push(uuid, jsonb),
  public.supamerge_pull(uuid, text, int, boolean),
  public.supamerge_put_snapshot(uuid, uuid, text, jsonb, text, text),
  public.supamerge_get_snapshots(uuid, uuid, int, int)
  to authenticated, service_role;

-- PostgREST caches the schema: tell it to reload (harmless elsewhere).
notify pgrst, 'reload schema';
