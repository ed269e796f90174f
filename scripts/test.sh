#!/usr/bin/env bash
# The test command (README, .ci/run): lints, docs and every test.
#
# Starts PostgreSQL for the Supabase-path tests when scripts/start-postgres.sh
# exists; it prints `export SUPAMERGE_TEST_DATABASE_URL=...`, evaluated here,
# so tests that need PostgreSQL never pass silently without it.
# $SUPAMERGE_TEST_DATABASE_URL (or $DATABASE_URL) selects an existing server.
# A private server start-postgres.sh had to start is stopped at the end
# (SUPAMERGE_KEEP_PG=1 keeps it running for the next run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ -z "${SUPAMERGE_TEST_DATABASE_URL:-}" && -n "${DATABASE_URL:-}" ]]; then
  export SUPAMERGE_TEST_DATABASE_URL=$DATABASE_URL
fi

stop_private_pg() {
  if [[ -n "${SUPAMERGE_TEST_PG_STARTED:-}" && "${SUPAMERGE_KEEP_PG:-0}" != 1 ]]; then
    step "stopping the private PostgreSQL in $SUPAMERGE_TEST_PG_STARTED"
    if [[ $(id -u) -eq 0 ]]; then
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$SUPAMERGE_TEST_PG_STARTED" -m fast stop >&2 || true
    else
      /usr/lib/postgresql/15/bin/pg_ctl -D "$SUPAMERGE_TEST_PG_STARTED" -m fast stop >&2 || true
    fi
  fi
}

if [ -x scripts/start-postgres.sh ]; then
  step "starting PostgreSQL"
  unset SUPAMERGE_TEST_PG_STARTED
  # A separate assignment so a failing script stops the run (set -e).
  pg_env=$(scripts/start-postgres.sh)
  eval "$pg_env"
  trap stop_private_pg EXIT
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps

# The JavaScript dependencies, from the lockfiles (a few seconds): the
# reference client's `node --test` suite (run by tests/js_client.rs against a
# gateway process) and the supabase-js compatibility check (tests/supabase_js.rs).
step "npm ci (clients/js, tests/js)"
for dir in clients/js tests/js; do
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

step "cargo test"
cargo test --all-targets

step "doc tests"
cargo test --doc

step "all checks passed"
