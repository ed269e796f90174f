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
--   * the auth schema with auth.uid() and auth.jwt(), exactly as Supabase
--     defines them;
--   * Supabase-like default privileges in schema public (new tables and
--     functions are granted to anon, authenticated and service_role), so that
--     the migration's revokes are tested against the same defaults it meets
--     on Supabase.
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
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    -- Development-only password: the local gateway logs in as this role the
    -- way PostgREST does. Trust-auth test clusters ignore it.
    create role authenticator login noinherit password 'authenticator-dev-only';
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

-- Supabase's statement timeouts (the local gateway applies per-role settings
-- the way PostgREST does).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create or replace function auth.uid() returns uuid language sql stable set search_path = '' as $$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;

create or replace function auth.jwt() returns jsonb language sql stable set search_path = '' as $$
  select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb $$;

grant execute on function auth.uid() to anon, authenticated, service_role;
grant execute on function auth.jwt() to anon, authenticated, service_role;

-- Supabase's defaults in schema public: the API roles may use the schema and
-- get every privilege on new tables, sequences and functions (RLS is what
-- protects rows; a migration revokes what it does not want exposed).
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant execute on functions to anon, authenticated, service_role;
