#!/usr/bin/env bash
# Creates .venv and installs waorch into it (editable) with the given extras, e.g. `test,neonize`.
# Idempotent and fast when nothing changed: a stamp keyed by the packaging files and the extras.
# Usage: scripts/setup-venv.sh [EXTRAS]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
VENV="$ROOT/.venv"
STAMP="$VENV/.waorch-install-stamp"
say() { echo "setup-venv: $*" >&2; }

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    say "waorch needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)"
    say "creating $VENV with $PY"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian keeps venv/ensurepip in a separate package
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$PY" -m venv "$VENV"
        else
            say "'$PY -m venv' failed: install your distribution's python3-venv package"
            exit 1
        fi
    fi
fi

want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ] ||
    ! "$VENV/bin/python" -c 'import waorch, app, tasks, worker_container, celeryconfig' 2>/dev/null; then
    target="."
    [ -n "$EXTRAS" ] && target=".[$EXTRAS]"
    say "installing waorch${EXTRAS:+ [$EXTRAS]} into .venv (first run takes a few minutes)"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$target") >&2
    echo "$want" > "$STAMP"
fi
