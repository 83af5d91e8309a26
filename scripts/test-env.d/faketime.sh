#!/usr/bin/env bash
# libfaketime: the clock-skew tests run real daemons whose clocks run ahead, behind, or jump.
set -euo pipefail
# It only installs things: `down` has nothing to stop.
[ "${1:-up}" = down ] && exit 0
found() { ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; }
found && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "libfaketime is missing; install it (apt-get install faketime) or run make test as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q faketime >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q faketime >/dev/null; }
found || { echo "could not install libfaketime (the Debian package faketime)" >&2; exit 1; }
