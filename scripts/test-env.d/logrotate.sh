#!/usr/bin/env bash
# logrotate: the deployment tests rotate a running daemon's log with the real tool.
set -euo pipefail
# It only installs things: `down` has nothing to stop.
[ "${1:-up}" = down ] && exit 0
command -v logrotate >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "logrotate is missing; install it (apt-get install logrotate) or run make test as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q logrotate >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q logrotate >/dev/null; }
command -v logrotate >/dev/null || { echo "could not install logrotate" >&2; exit 1; }
