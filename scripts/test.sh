#!/usr/bin/env bash
# The test command (README, .ci/run): lints, docs and every test.
#
# Starts PostgreSQL for the Supabase-path tests when scripts/start-postgres.sh
# exists; it prints `export SUPAMERGE_TEST_DATABASE_URL=...`, evaluated here,
# so tests that need PostgreSQL never pass silently without it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

if [ -x scripts/start-postgres.sh ]; then
  step "starting PostgreSQL"
  # A separate assignment so a failing script stops the run (set -e).
  pg_env=$(scripts/start-postgres.sh)
  eval "$pg_env"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps

step "cargo test"
cargo test --all-targets

step "doc tests"
cargo test --doc

step "all checks passed"
