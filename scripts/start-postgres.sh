#!/usr/bin/env bash
# Makes a PostgreSQL 15 reachable for the test suite and prints, on stdout,
#   export SUPAMERGE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
# (a superuser URL; the tests create one database per test from a template).
#
# Usage:  eval "$(scripts/start-postgres.sh)"
# When it had to start a private cluster it also prints
#   export SUPAMERGE_TEST_PG_STARTED=<data dir>
# (stop it with: pg_ctl -D <data dir> stop, as the postgres user when root).
#
# In order, it uses the first that works:
#   1. $SUPAMERGE_TEST_DATABASE_URL, when it is already set and answers;
#   2. a server on 127.0.0.1:5432 accepting user postgres without a password;
#   3. the Debian cluster 15/main (pg_ctlcluster 15 main start);
#   4. a private trust-auth cluster in target/pg15 (or $TMPDIR when the
#      postgres user cannot reach target/), initdb'd once, on a free port.
# PostgreSQL 15 is installed with apt-get when its binaries are missing.
# Idempotent and fast when a server is already running. Progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
log() { echo "start-postgres: $*" >&2; }

answers() { # url
  command -v psql >/dev/null 2>&1 || return 1
  PGCONNECT_TIMEOUT=3 psql "$1" -XtAqc 'select 1' >/dev/null 2>&1
}

emit() { # url
  log "using $1"
  echo "export SUPAMERGE_TEST_DATABASE_URL=$1"
  exit 0
}

if [[ -n "${SUPAMERGE_TEST_DATABASE_URL:-}" ]] && answers "$SUPAMERGE_TEST_DATABASE_URL"; then
  emit "$SUPAMERGE_TEST_DATABASE_URL"
fi

DEFAULT_URL=postgres://postgres@127.0.0.1:5432/postgres
# SUPAMERGE_PG_PRIVATE=1 skips the shared server (to test the private path).
PRIVATE_ONLY=${SUPAMERGE_PG_PRIVATE:-0}
if [[ $PRIVATE_ONLY != 1 ]] && answers "$DEFAULT_URL"; then
  emit "$DEFAULT_URL"
fi

if [[ ! -x "$PGBIN/initdb" ]]; then
  log "PostgreSQL 15 is not installed; installing postgresql-15"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql-15 >&2
  if [[ $PRIVATE_ONLY != 1 ]] && answers "$DEFAULT_URL"; then
    emit "$DEFAULT_URL"
  fi
fi

if [[ $PRIVATE_ONLY != 1 ]] && command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql/15/main ]]; then
  log "starting the 15/main cluster"
  if pg_ctlcluster 15 main start >&2 2>&1 || true; then
    for _ in $(seq 1 20); do
      answers "$DEFAULT_URL" && emit "$DEFAULT_URL"
      sleep 0.5
    done
  fi
  log "15/main did not accept trust connections on 127.0.0.1:5432; using a private cluster"
fi

# A private cluster. initdb and postgres refuse to run as root: run them as
# the postgres user then.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  else
    "$@"
  fi
}

DATA="$ROOT/target/pg15"
mkdir -p "$ROOT/target"
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$ROOT/target" 2>/dev/null; then
  DATA="${TMPDIR:-/tmp}/supamerge-pg15"
fi
if [[ ! -s "$DATA/PG_VERSION" ]]; then
  log "initdb $DATA"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [[ $(id -u) -eq 0 ]] && chown postgres: "$DATA"
  as_owner "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale >&2
fi

PORT=
if [[ -s "$DATA/supamerge.port" ]]; then PORT=$(cat "$DATA/supamerge.port"); fi
URL() { echo "postgres://postgres@127.0.0.1:$1/postgres"; }
if [[ -n "$PORT" ]] && answers "$(URL "$PORT")"; then
  emit "$(URL "$PORT")"
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=55432
while ! port_free "$PORT"; do PORT=$((PORT + 1)); done
echo "$PORT" >"$DATA/supamerge.port"
[[ $(id -u) -eq 0 ]] && chown postgres: "$DATA/supamerge.port"

log "starting a private cluster on 127.0.0.1:$PORT"
as_owner "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200 -c fsync=off -c full_page_writes=off" \
  start >&2
answers "$(URL "$PORT")" || { log "the private cluster does not answer; see $DATA/server.log"; exit 1; }
# Tells scripts/test.sh that this run started the server (it stops it after).
echo "export SUPAMERGE_TEST_PG_STARTED=$DATA"
emit "$(URL "$PORT")"
