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
