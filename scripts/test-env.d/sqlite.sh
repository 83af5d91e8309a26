#!/usr/bin/env bash
# The run's SQLite test database lives in the run's own directory, so two runs of one checkout never share it
# (tests/settings.py reads TEST_SQLITE_PATH). `down` has nothing to do: the directory goes with the run.
set -euo pipefail
[ "${1:-up}" = down ] && exit 0
[ -n "${TEST_ENV_DIR:-}" ] || { echo "sqlite.sh: TEST_ENV_DIR is not set; run it through make test" >&2; exit 1; }
echo "TEST_SQLITE_PATH=$TEST_ENV_DIR/db.sqlite3" >>"$TEST_ENV_DIR/env"
