#!/usr/bin/env bash
# Builds the production images (Dockerfile: services; worker_container/Dockerfile: session worker)
# without a registry: a Debian bookworm base with Python is bootstrapped from Debian's archive with
# mmdebstrap, imported as localhost/debian-python:bookworm, and both Dockerfiles are built FROM it
# through their PYTHON_IMAGE build argument (elsewhere they default to python:3.11-slim-bookworm).
#
#   scripts/build-images.sh [ENGINE...]
# ENGINE: `podman` (its CLI, the storage behind /run/waorch-podman.sock) or a dockerd address such
# as unix:///run/waorch-dockerd.sock (scripts/setup-dockerd.sh). Default: $WAORCH_SWARM_HOST when
# it is set, and podman. The first engine builds; the others get the images by save | load.
#
# Idempotent and cached: the base tarball is kept in $WAORCH_IMAGE_CACHE keyed by its inputs and
# the ISO week (so security updates arrive weekly); an engine that already has the base with that
# key skips the import; the engines' layer caches make unchanged rebuilds fast (the Dockerfiles
# install the dependencies before copying the sources). Needs root (mmdebstrap, apt, engines).
# Sizes and timings go to stderr and to $WAORCH_IMAGE_CACHE/last-build.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WAORCH_IMAGE_CACHE:-/var/cache/waorch-images}"
BASE_IMAGE="${WAORCH_BASE_IMAGE:-localhost/debian-python:bookworm}"
MINBASE_IMAGE="$BASE_IMAGE-minbase"  # the imported tarball; BASE_IMAGE adds the local CAs
LOCAL_CAS=/usr/local/share/ca-certificates
SERVICES_IMAGE="${WAORCH_IMAGE:-localhost/waorch:latest}"
WORKER_IMAGE="${WAORCH_WORKER_IMAGE:-localhost/waorch-worker:latest}"
SUITE=bookworm
MIRROR="${WAORCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
INCLUDE="python3,python3-venv,passwd,ca-certificates"
REFRESH="${WAORCH_BASE_REFRESH:-$(date -u +%G-W%V)}"
DOCKER=/usr/bin/docker  # another docker CLI may come first in PATH
# merged /usr without the usrmerge package (which pulls perl); no recommends; no man pages,
# translations or docs except the copyright files (kept for later apt installs too)
MMDEBSTRAP_OPTS=(
    --variant=minbase "--include=$INCLUDE"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    '--aptopt=APT::Install-Recommends "false"'
    '--dpkgopt=path-exclude=/usr/share/man/*'
    '--dpkgopt=path-exclude=/usr/share/locale/*'
    '--dpkgopt=path-include=/usr/share/locale/locale.alias'
    '--dpkgopt=path-exclude=/usr/share/doc/*'
    '--dpkgopt=path-include=/usr/share/doc/*/copyright'
    '--dpkgopt=path-exclude=/usr/share/info/*'
)
say() { echo "build-images: $*" >&2; }
now() { date +%s; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (mmdebstrap, the engines)"
    exit 1
fi
engines=("$@")
if [ "${#engines[@]}" = 0 ]; then
    engines=()
    [ -n "${WAORCH_SWARM_HOST:-}" ] && engines+=("$WAORCH_SWARM_HOST")
    engines+=(podman)
fi

# engine CLI: podman's own, or the docker CLI against a dockerd socket
engine() {
    local which="$1"; shift
    if [ "$which" = podman ]; then podman "$@"; else "$DOCKER" -H "$which" "$@"; fi
}

# 1. the base root file system, cached by its inputs
if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends mmdebstrap >&2
fi
key="$(printf '%s\n' "$SUITE" "$MIRROR" "$REFRESH" "$(mmdebstrap --version)" "${MMDEBSTRAP_OPTS[@]}" |
    sha256sum | cut -c1-16)"
tarball="$CACHE/debian-python-$SUITE-$key.tar"
mkdir -p "$CACHE"
report="$CACHE/last-build.txt"
: > "$report.partial"
note() { say "$*"; echo "$*" >> "$report.partial"; }
if [ ! -s "$tarball" ]; then
    started=$(now)
    say "bootstrapping Debian $SUITE with Python (mmdebstrap; about 1-2 minutes)"
    mmdebstrap --format=tar "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "$tarball.partial" "$MIRROR" >&2
    mv "$tarball.partial" "$tarball"
    find "$CACHE" -maxdepth 1 -name "debian-python-$SUITE-*.tar" ! -name "$(basename "$tarball")" -delete
    note "base tarball: $(( $(now) - started )) s, $(( $(stat -c %s "$tarball") / 1048576 )) MB"
else
    note "base tarball: cached ($(basename "$tarball"))"
fi

# the machine's own CAs (Debian's place for site CAs), so that pip and apt in the builds trust
# what this machine trusts (a TLS-inspecting egress proxy, for one); an added layer, not part of
# the cached tarball, since such CAs can change
ca_context="$(mktemp -d)"
trap 'rm -rf "$ca_context"' EXIT
mkdir -p "$ca_context/local-ca"
if compgen -G "$LOCAL_CAS/*.crt" >/dev/null; then cp "$LOCAL_CAS"/*.crt "$ca_context/local-ca/"; fi
cat > "$ca_context/Dockerfile" <<EOF
FROM $MINBASE_IMAGE
COPY local-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
EOF

builder="${engines[0]}"
# 2. the base image, re-imported only when the tarball changed, plus the local CAs
have="$(engine "$builder" image inspect --format '{{index .Config.Labels "waorch.base.key"}}' \
    "$MINBASE_IMAGE" 2>/dev/null || true)"
if [ "$have" != "$key" ]; then
    say "importing $MINBASE_IMAGE into $builder"
    engine "$builder" import --change "LABEL waorch.base.key=$key" --change "ENV LANG=C.UTF-8" \
        --change 'CMD ["python3"]' "$tarball" "$MINBASE_IMAGE" >/dev/null
fi
engine "$builder" build -q --network host -t "$BASE_IMAGE" "$ca_context" >/dev/null

# 3. both images FROM it, in the first engine; host network: the dockerd here has no bridge, and
# pip needs PyPI
images=("$BASE_IMAGE")
for spec in "$SERVICES_IMAGE:Dockerfile" "$WORKER_IMAGE:worker_container/Dockerfile"; do
    image="${spec%:*}"
    dockerfile="${spec##*:}"
    images+=("$image")
    started=$(now)
    say "building $image from $dockerfile in $builder"
    engine "$builder" build --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
        -f "$ROOT/$dockerfile" -t "$image" "$ROOT" >&2
    size="$(engine "$builder" image inspect --format '{{.Size}}' "$image")"
    note "$image: built in $(( $(now) - started )) s, $(( size / 1000000 )) MB"
done

# 4. the other engines get the same images (save | load keeps their ids), when theirs differ
id_of() { engine "$1" image inspect --format '{{.Id}}' "$2" 2>/dev/null | sed 's/^sha256://' || true; }
for which in "${engines[@]:1}"; do
    stale=()
    for image in "${images[@]}"; do
        [ "$(id_of "$which" "$image")" = "$(id_of "$builder" "$image")" ] || stale+=("$image")
    done
    [ "${#stale[@]}" = 0 ] && continue
    started=$(now)
    say "copying ${stale[*]} into $which"
    engine "$builder" save "${stale[@]}" | engine "$which" load >/dev/null
    note "copied ${#stale[@]} image(s) into $which in $(( $(now) - started )) s"
done
base_size="$(engine "$builder" image inspect --format '{{.Size}}' "$BASE_IMAGE")"
note "$BASE_IMAGE: $(( base_size / 1000000 )) MB"
mv "$report.partial" "$report"
