-- supamerge: local stand-in for what a Supabase project already provides.
--
-- NOT part of the migration. Apply it ONLY to a plain PostgreSQL (development,
-- CI), before supabase/migrations/*.sql. Never run it against a Supabase
-- project: Supabase creates these roles, the auth schema and its functions
-- itself, and this file would overwrite them.
--
-- It creates:
--   * the API roles anon, authenticated (nologin), service_role (nologin,
--     bypassrls) and authenticator (login, noinherit, member of the three),
--     with Supabase's per-role statement timeouts;
--   * supabase_postgres, the role that plays hosted Supabase's `postgres`:
--     LOGIN and BYPASSRLS but NOT a superuser. Load the migration as this
--     role (src/gateway/dev.rs and tests/support/pg.rs do), so that it owns
--     every table and SECURITY DEFINER function exactly as `postgres` does on
--     Supabase, and no test hides a reliance on superuser powers;
--   * the auth schema with auth.uid() and auth.jwt(), returning what
--     Supabase's return;
--   * Supabase-like default privileges in schema public for objects that
--     supabase_postgres creates (new tables and functions are granted to
--     anon, authenticated and service_role), so that the migration's revokes
--     are tested against the same defaults it meets on Supabase.
--
-- Idempotent: roles are cluster-wide and created only when missing.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_postgres') then
    -- Development-only password, like authenticator's.
    create role supabase_postgres login nosuperuser bypassrls password 'supabase-postgres-dev-only';
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    -- Development-only password: the local gateway logs in as this role the
    -- way PostgREST does. Trust-auth test clusters ignore it.
    create role authenticator login noinherit password 'authenticator-dev-only';
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

-- What `postgres` may do on a Supabase project's database: create schemas,
-- and create objects in public (which it owns there).
do $$
begin
  execute format('grant create on database %I to supabase_postgres', current_database());
end
$$;
alter schema public owner to supabase_postgres;

-- Supabase's statement timeouts (the local gateway applies per-role settings
-- the way PostgREST does).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role, supabase_postgres;

-- The values Supabase's auth.uid() and auth.jwt() return. Each pins its
-- search_path with pg_temp LAST (and names its types in pg_catalog): a
-- function that sets `search_path = ''` still searches the caller's pg_temp
-- FIRST for type names, so a SECURITY DEFINER function calling it would run
-- a caller's `pg_temp.uuid` domain check as its owner (issue 11).
create or replace function auth.uid() returns pg_catalog.uuid language sql stable
set search_path = pg_catalog, pg_temp as $$
  select coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb
                     operator(pg_catalog.->>) 'sub'))::pg_catalog.uuid $$;

create or replace function auth.jwt() returns pg_catalog.jsonb language sql stable
set search_path = pg_catalog, pg_temp as $$
  select coalesce(nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
                  nullif(pg_catalog.current_setting('request.jwt.claims', true), ''))::pg_catalog.jsonb $$;

grant execute on function auth.uid() to anon, authenticated, service_role, supabase_postgres;
grant execute on function auth.jwt() to anon, authenticated, service_role, supabase_postgres;

-- Supabase's defaults in schema public for what `postgres` creates: the API
-- roles may use the schema and get every privilege on new tables, sequences
-- and functions (RLS is what protects rows; a migration revokes what it does
-- not want exposed).
grant usage on schema public to anon, authenticated, service_role;
alter default privileges for role supabase_postgres in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role supabase_postgres in schema public
  grant all on sequences to anon, authenticated, service_role;
alter default privileges for role supabase_postgres in schema public
  grant execute on functions to anon, authenticated, service_role;

-- The gateway's stand-in for Supabase Auth's refresh-token grant
-- (`POST /auth/v1/token?grant_type=refresh_token`, src/gateway/token_endpoint.rs;
-- docs/workspaces.md): the ids of the development refresh tokens already
-- used. A refresh token works once; its answer carries a new one (rotation).
-- Supabase Auth keeps its own tables; this one exists only here.
create table if not exists auth.dev_refresh_tokens_used (
  token_id uuid primary key,
  user_id  uuid not null,
  used_at  timestamptz not null default now()
);
revoke all on table auth.dev_refresh_tokens_used from public, anon, authenticated, service_role;
grant usage on schema auth to authenticator;
grant select, insert on table auth.dev_refresh_tokens_used to authenticator;

-- ---------------------------------------------------------------------------
-- Realtime (Broadcast from the database), shaped as on Supabase
-- ---------------------------------------------------------------------------
-- On a Supabase project the Realtime service owns schema `realtime`:
-- `realtime.messages` (owned by supabase_realtime_admin, RLS enabled, the
-- API roles may select/insert/update; partitioned by day there, a plain
-- table here), `realtime.send()` and `realtime.topic()`, and `postgres` is
-- a member of supabase_realtime_admin (so migrations may create policies on
-- realtime.messages). This recreates that for plain PostgreSQL, plus what
-- the local gateway needs in place of the Realtime server:
--   * realtime.send() also raises NOTIFY realtime_broadcast (the gateway
--     LISTENs; Realtime reads the WAL instead);
--   * realtime.gateway_probe() inserts the probe rows Realtime
--     Authorization selects back as the user (Realtime inserts them with
--     its own privileged login), executable by authenticator only;
--   * realtime.gateway_prune() deletes messages older than three days (as
--     Supabase drops its daily partitions).

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin nologin noinherit;
  end if;
end
$$;
grant supabase_realtime_admin to supabase_postgres;

create schema if not exists realtime;
grant usage, create on schema realtime to supabase_realtime_admin;
grant usage on schema realtime to anon, authenticated, service_role, supabase_postgres, authenticator;

create table if not exists realtime.messages (
  topic       text not null,
  extension   text not null,
  payload     jsonb,
  event       text,
  private     boolean default false,
  updated_at  timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id          uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
create index if not exists messages_inserted_at_idx on realtime.messages (inserted_at);
alter table realtime.messages owner to supabase_realtime_admin;
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role, supabase_postgres;

create or replace function realtime.topic() returns text language sql stable
set search_path = pg_catalog, pg_temp as $$
  select nullif(pg_catalog.current_setting('realtime.topic', true), '')::pg_catalog.text
$$;

-- Supabase's realtime.send (SECURITY INVOKER: the insert runs as the
-- caller and passes its RLS insert policies or bypasses RLS): adds an "id"
-- to the payload, sets realtime.topic, inserts, and never fails the caller
-- (a failure is a WARNING). Here it also notifies the gateway; a payload
-- over 7000 bytes is announced without it (the gateway then skips it).
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql
set search_path = pg_catalog, pg_temp as $$
declare
  generated_id uuid;
  final_payload jsonb;
  note jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    perform set_config('realtime.topic', topic, true);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
    note := jsonb_build_object('id', generated_id, 'topic', topic, 'event', event,
                               'private', private, 'payload', final_payload);
    if octet_length(note::text) > 7000 then
      note := note - 'payload';
    end if;
    perform pg_notify('realtime_broadcast', note::text);
  exception
    when others then
      raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end
$$;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
alter function realtime.topic() owner to supabase_realtime_admin;
grant execute on function realtime.send(jsonb, text, text, boolean) to public;
grant execute on function realtime.topic() to public;

-- For the gateway's Realtime Authorization: inserts one probe message per
-- extension for the topic and returns their ids (the transaction is rolled
-- back by the caller).
create or replace function realtime.gateway_probe(p_topic text, p_extensions text[])
returns text[] language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp as $$
declare
  v_ids text[] := '{}';
  v_ext text;
  v_id  uuid;
begin
  foreach v_ext in array p_extensions loop
    v_id := gen_random_uuid();
    insert into realtime.messages (id, topic, extension, private) values (v_id, p_topic, v_ext, true);
    v_ids := v_ids || v_id::text;
  end loop;
  return v_ids;
end
$$;

create or replace function realtime.gateway_prune() returns bigint language sql volatile security definer
set search_path = pg_catalog, pg_temp as $$
  with gone as (delete from realtime.messages m where m.inserted_at < now() - interval '3 days' returning 1)
  select count(*) from gone
$$;
alter function realtime.gateway_probe(text, text[]) owner to supabase_realtime_admin;
alter function realtime.gateway_prune() owner to supabase_realtime_admin;
revoke all on function realtime.gateway_probe(text, text[]) from public;
revoke all on function realtime.gateway_prune() from public;
grant execute on function realtime.gateway_probe(text, text[]) to authenticator;
grant execute on function realtime.gateway_prune() to authenticator;
