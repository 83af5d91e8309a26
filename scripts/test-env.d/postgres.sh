#!/usr/bin/env bash
# Ready the PostgreSQL test cluster: var/pg, 127.0.0.1:$TEST_PG_PORT (54329), trust auth, role daemonkit.
# Safe to run again: it creates only what is missing and starts the server only if it is down.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT="${TEST_PG_PORT:-54329}"
LAST_PORT=$((PORT + 20))
BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
ROOT="$PWD/var/pg"
DATA="$ROOT/data"
ROLE=daemonkit

fail() { echo "postgres.sh: $*" >&2; exit 1; }

if [ ! -x "$BIN/initdb" ] && [ "$(id -u)" = 0 ] && [ -z "${PG_BIN:-}" ]; then
    echo "postgres.sh: installing PostgreSQL 15 (apt-get install postgresql-15)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null; } || fail "could not install postgresql-15"
fi
[ -x "$BIN/initdb" ] || fail "PostgreSQL 15 is not installed at $BIN (apt-get install postgresql-15, or set PG_BIN)"

# initdb and the server refuse to run as root: run them as the postgres user then.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || fail "running as root but there is no postgres user to own the cluster"
    as_owner() { runuser -u postgres -- "$@"; }
    owner=postgres
else
    as_owner() { "$@"; }
    owner="$(id -un)"
fi

mkdir -p "$ROOT" 2>/dev/null || true
if [ "$owner" = postgres ] && ! runuser -u postgres -- test -x "$PWD/var" 2>/dev/null; then
    # The checkout is somewhere the postgres user can't enter (under /root, say): keep the
    # cluster outside it, and leave var/pg pointing there.
    rmdir "$ROOT" 2>/dev/null || true
    outside="/var/tmp/daemonkit-test-pg-$PORT"
    mkdir -p "$outside"
    [ -e "$ROOT" ] || ln -s "$outside" "$ROOT"
    ROOT="$outside"
    DATA="$ROOT/data"
fi
chown "$owner" "$ROOT"
chmod 700 "$ROOT"

if [ ! -s "$DATA/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$ROOT/initdb.log" 2>&1 \
        || fail "initdb failed; see $ROOT/initdb.log"
    # Loopback only, no Unix socket (its default directory may not exist or be writable),
    # and no fsync: this cluster holds throwaway test data.
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
fi

if as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    PORT="$(cat "$ROOT/port" 2>/dev/null || echo "$PORT")"
else
    # Another server (a leftover cluster of another checkout, say) may hold the port:
    # take the next free one and tell the tests through var/pg/port.
    while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        PORT=$((PORT + 1))
        [ "$PORT" -le "$LAST_PORT" ] || fail "no free port for PostgreSQL up to $LAST_PORT; set TEST_PG_PORT"
    done
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$ROOT/server.log" -o "-p $PORT" -w -t 60 start >/dev/null \
        || fail "the server did not start; see $ROOT/server.log"
fi
echo "$PORT" >"$ROOT/port"

psql() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
if [ "$(psql -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql -c "CREATE ROLE $ROLE LOGIN CREATEDB" || fail "could not create role $ROLE"
fi
if [ "$(psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$ROLE'")" != 1 ]; then
    psql -c "CREATE DATABASE $ROLE OWNER $ROLE" || fail "could not create database $ROLE"
fi
echo "postgres.sh: PostgreSQL ready at postgres://$ROLE@127.0.0.1:$PORT/$ROLE"
