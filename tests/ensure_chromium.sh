#!/bin/sh
# The browser tests drive Debian's chromium (/usr/bin/chromium): install it when it is
# missing and this machine can (root with apt-get), as a fresh CI machine needs. Quiet and
# idempotent; under a lock, so two `make test` started together install it once. Where it
# cannot install, it says so and the browser tests skip with the reason (CI=true: fail).
set -eu
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and cannot be installed here (needs root and apt-get); the browser tests will skip" >&2
    exit 0
fi
LOCK=/var/lock/modelyard-chromium.lock
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
exec 9>"$LOCK"
flock 9
[ -x "$CHROMIUM" ] && exit 0  # installed by whoever held the lock before us
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends chromium fonts-liberation >>"$LOG" 2>&1; }
# A fresh machine's package lists may be empty or stale: update once, then retry.
if ! install && ! { apt-get update -q >>"$LOG" 2>&1 && install; }; then
    cat "$LOG" >&2
    echo "ensure_chromium: could not install chromium (output above)" >&2
    exit 1
fi
echo "ensure_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)" >&2
