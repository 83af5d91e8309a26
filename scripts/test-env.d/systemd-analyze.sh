#!/usr/bin/env bash
# systemd-analyze: the deployment tests check the generated units with `systemd-analyze verify`.
# As root it installs Debian's systemd package (which ships the tool) when missing; otherwise it says how, and
# those tests skip outside CI.
set -euo pipefail
# It only installs things: `down` has nothing to stop.
[ "${1:-up}" = down ] && exit 0
command -v systemd-analyze >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "systemd-analyze.sh: systemd-analyze is missing; the systemd unit checks will skip. Install it with:" \
         "sudo apt-get update && sudo apt-get install -y systemd"
    exit 0
fi
echo "systemd-analyze.sh: installing systemd-analyze for the deployment tests (apt-get install systemd)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends systemd >/dev/null; then
    echo "systemd-analyze.sh: could not install systemd with apt-get; the deployment tests need systemd-analyze" >&2
    exit 1
fi
command -v systemd-analyze >/dev/null || {
    echo "systemd-analyze.sh: apt-get installed systemd but systemd-analyze is missing" >&2
    exit 1
}
