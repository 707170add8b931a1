#!/usr/bin/env bash
# System packages the test suite needs (Debian): the PostgreSQL server binaries (the tests start
# their own throw-away cluster on loopback, the system service is not used) and Chromium with its
# driver (browser tests; recommended packages included, fonts among them). Idempotent: does
# nothing, quietly, when everything is already there.
set -euo pipefail

PACKAGES=(postgresql chromium chromium-driver redis-server nginx)
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)  # axe-core, below
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# axe-core 4.x for the accessibility checks of the browser tests, pinned by
# tests/a11y/package-lock.json (npm ci: exactly that version, from the npm registry).
install_axe() {
    [ -f "$ROOT/tests/a11y/node_modules/axe-core/axe.min.js" ] && return 0
    echo "test-deps: installing axe-core (npm ci in tests/a11y)..." >&2
    npm ci --prefix "$ROOT/tests/a11y" --no-audit --no-fund --silent \
        || { echo "ERREUR / ERROR: test-deps: npm ci in tests/a11y failed (axe-core)." >&2; exit 1; }
}

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=()
for package in "${PACKAGES[@]}"; do
    installed "$package" || missing+=("$package")
done
# The files the tests look for, in case a package is half there.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    [[ " ${missing[*]:-} " == *" postgresql "* ]] || missing+=(postgresql)
fi
[ -x /usr/bin/chromium ] || [[ " ${missing[*]:-} " == *" chromium "* ]] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || [[ " ${missing[*]:-} " == *" chromium-driver "* ]] || missing+=(chromium-driver)

if [ "${#missing[@]}" -eq 0 ]; then
    install_axe
    exit 0
fi

fail() {
    echo "ERREUR / ERROR: test-deps: $1" >&2
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        echo "--- apt-get output (last lines) ---" >&2
        tail -20 "$2" >&2
    fi
    echo "Install them by hand: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
    fail "missing packages (${missing[*]}) and no apt-get on this machine (Debian/Ubuntu expected)."
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        fail "missing packages (${missing[*]}): installing them needs root (or password-less sudo)."
    fi
fi

echo "test-deps: installing ${missing[*]} (apt-get)..." >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# Wait (up to 10 min) for another apt/dpkg run to release its lock instead of failing at once.
started=$(date +%s)
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >"$log" 2>&1 || fail "apt-get update failed." "$log"
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >"$log" 2>&1 \
    || fail "apt-get install ${missing[*]} failed." "$log"

ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || fail "postgresql installed but no /usr/lib/postgresql/*/bin/initdb."
[ -x /usr/bin/chromium ] || fail "chromium installed but no /usr/bin/chromium."
[ -x /usr/bin/chromedriver ] || fail "chromium-driver installed but no /usr/bin/chromedriver."
echo "test-deps: done in $(( $(date +%s) - started )) s" >&2
install_axe
