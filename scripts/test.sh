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

# Lints, docs and tests run with every feature of the product (the
# integration tests drive the binary, the gateway and the benches, and use
# test_util); the library is also linted and documented alone (no default
# features: the engine without the Supabase client), so `cargo add supamerge`
# keeps building. An explicit list rather than --all-features: a feature that
# changes what runs (e.g. storage failpoints) gets its own step.
FEATURES=supabase,test-util,cli,gateway,bench

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (features $FEATURES)"
cargo clippy --all-targets --features "$FEATURES" -- -D warnings

step "cargo clippy (the library alone, no default features)"
cargo clippy --lib --no-default-features -- -D warnings

step "cargo doc (features $FEATURES, and the library alone)"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --features "$FEATURES"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --no-default-features

# The JavaScript dependencies, from the lockfiles (a few seconds): the
# reference client's `node --test` suite (run by tests/js_client.rs against a
# gateway process) and the supabase-js compatibility check (tests/supabase_js.rs).
step "npm ci (clients/js, tests/js)"
for dir in clients/js tests/js; do
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

# tests/examples.rs runs the examples' binaries from target/debug/examples/,
# which `cargo test --all-targets` builds but does not place there.
step "cargo build --examples"
cargo build --features "$FEATURES" --examples

step "cargo test"
cargo test --features "$FEATURES" --all-targets

step "doc tests"
cargo test --features "$FEATURES" --doc

# sled's failpoints need a build of sled with its `failpoints` feature: a
# separate, explicit target (tests/failpoints.rs, ~1.5 min to build, seconds
# to run).
step "failpoint tests"
cargo clippy --features "$FEATURES,failpoints" --test failpoints -- -D warnings
cargo test --features "$FEATURES,failpoints" --test failpoints

step "all checks passed"
