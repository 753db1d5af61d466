#!/usr/bin/env bash
# Makes sure Debian's headless Chromium is there for the dashboard's browser test (Playwright
# drives it; no browser is ever downloaded by Playwright). Idempotent.
# Logs go to stderr; the only line on stdout is the last one: WAORCH_CHROMIUM=<path>.
set -euo pipefail

say() { echo "setup-browser: $*" >&2; }

find_chromium() {
    for candidate in "${WAORCH_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! path="$(find_chromium)"; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "no chromium found; install it as root: apt-get install chromium"
        exit 1
    fi
    say "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium >&2
    path="$(find_chromium)" || { say "chromium is still missing after apt-get"; exit 1; }
fi

# a browser that cannot start headless here is as good as none
if ! "$path" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1; then
    say "$path does not start"
    exit 1
fi
echo "WAORCH_CHROMIUM=$path"
