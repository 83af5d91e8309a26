#!/usr/bin/env bash
# Readies Debian's Chromium for the real-browser tests (tests/browser/), which drive it with Playwright.
# As root it installs the package when missing; otherwise it says how, and those tests skip with that reason.
set -euo pipefail

# It only installs things: `down` has nothing to stop.
[ "${1:-up}" = down ] && exit 0

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    echo "chromium.sh: installing Chromium for the browser tests (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
        echo "chromium.sh: could not install Chromium with apt-get; the browser tests need $CHROMIUM" >&2
        exit 1
    fi
    [ -x "$CHROMIUM" ] || { echo "chromium.sh: apt-get installed chromium but $CHROMIUM is missing" >&2; exit 1; }
    exit 0
fi

echo "chromium.sh: $CHROMIUM is missing; the browser tests will skip. Install it with: sudo apt-get update && sudo apt-get install -y chromium"
