#!/usr/bin/env bash
# A PostgreSQL 15 cluster for this test run alone: a fresh temporary directory, a free loopback port,
# trust auth, role and database daemonkit.
#   up:   create and start it; add TEST_PG_DIR and TEST_PG_URL to $TEST_ENV_DIR/env for the tests.
#   down: stop it and remove its directory, unless KEEP_TEST_PG=1 (then the directory is kept, the server stopped).
# Both are safe after a failed or interrupted `up`, and `down` is safe to run twice.
set -euo pipefail

ACTION="${1:-up}"
BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
ROLE=daemonkit

fail() { echo "postgres.sh: $*" >&2; exit 1; }

[ -n "${TEST_ENV_DIR:-}" ] && [ -d "$TEST_ENV_DIR" ] \
    || fail "TEST_ENV_DIR is not set; run it through make test or scripts/test-env.d/run.py"
ENV_FILE="$TEST_ENV_DIR/env"

# initdb and the server refuse to run as root: run them as the postgres user then.
if [ "$(id -u)" = 0 ]; then
    as_owner() { runuser -u postgres -- "$@"; }
    owner=postgres
else
    as_owner() { "$@"; }
    owner="$(id -un)"
fi

recorded_dir() { sed -n 's/^TEST_PG_DIR=//p' "$ENV_FILE" 2>/dev/null | tail -n 1; }

down() {
    local dir
    dir="$(recorded_dir)"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -e "$dir/data/postmaster.pid" ]; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    if [ "${KEEP_TEST_PG:-}" = 1 ]; then
        echo "postgres.sh: kept the test cluster's data in $dir/data (KEEP_TEST_PG=1; remove it when done)"
    else
        rm -rf "$dir"
    fi
}

if [ "$ACTION" = down ]; then
    down
    exit 0
fi
[ "$ACTION" = up ] || fail "unknown action '$ACTION' (up or down)"

if [ ! -x "$BIN/initdb" ] && [ "$(id -u)" = 0 ] && [ -z "${PG_BIN:-}" ]; then
    echo "postgres.sh: installing PostgreSQL 15 (apt-get install postgresql-15)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null; } || fail "could not install postgresql-15"
fi
[ -x "$BIN/initdb" ] || fail "PostgreSQL 15 is not installed at $BIN (apt-get install postgresql-15, or set PG_BIN)"
[ "$owner" != postgres ] || id postgres >/dev/null 2>&1 \
    || fail "running as root but there is no postgres user to own the cluster"

# A fresh directory owned by the cluster's owner. As root it must be one the postgres user can enter:
# if the temporary directory in use is not (under /root, say), take one in /tmp.
DIR="$(mktemp -d "${TMPDIR:-/tmp}/daemonkit-pg.XXXXXX")"
echo "TEST_PG_DIR=$DIR" >>"$ENV_FILE"
chown "$owner" "$DIR"
if ! as_owner test -w "$DIR"; then
    rm -rf "$DIR"
    DIR="$(mktemp -d /tmp/daemonkit-pg.XXXXXX)"
    echo "TEST_PG_DIR=$DIR" >>"$ENV_FILE"
    chown "$owner" "$DIR"
    as_owner test -w "$DIR" || fail "the $owner user can't write to a directory in /tmp"
fi
DATA="$DIR/data"

as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 \
    || fail "initdb failed; see $DIR/initdb.log"
# Loopback only, no Unix socket (its default directory may not exist or be writable),
# and no fsync: this cluster holds throwaway test data.
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF

# A free port is known free only once the server has bound it: try random ports until one start succeeds
# (another run may take the same port between the probe and the bind).
PORT=
for _ in 1 2 3 4 5 6 7 8; do
    candidate=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null && continue
    if as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "-p $candidate" -w -t 60 start >/dev/null 2>&1; then
        PORT=$candidate
        break
    fi
    # A server that failed to bind has exited; one still starting up after 60 s is stopped before the next try.
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
done
[ -n "$PORT" ] || fail "the server did not start on any of 8 ports; see $DIR/server.log"

psql() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }
psql -c "CREATE ROLE $ROLE LOGIN CREATEDB" >/dev/null || fail "could not create role $ROLE"
# A test's database is dropped WITH (FORCE) while an autovacuum worker may still be in it; ending that
# worker (it runs as no role at all) takes pg_signal_backend.
psql -c "GRANT pg_signal_backend TO $ROLE" >/dev/null || fail "could not grant pg_signal_backend to $ROLE"
psql -c "CREATE DATABASE $ROLE OWNER $ROLE" >/dev/null || fail "could not create database $ROLE"
echo "TEST_PG_URL=postgres://$ROLE@127.0.0.1:$PORT/$ROLE" >>"$ENV_FILE"
echo "postgres.sh: PostgreSQL ready at postgres://$ROLE@127.0.0.1:$PORT/$ROLE (data in $DATA)"
