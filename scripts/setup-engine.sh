#!/usr/bin/env bash
# Installs, configures and starts podman's Docker-compatible API (see docs/orchestrator.md).
# Idempotent: re-running it reuses what is there. The last line printed is the DOCKER_HOST to use.
set -euo pipefail

SOCKET="${WAORCH_ENGINE_SOCKET:-/run/waorch-podman.sock}"
LOG="${WAORCH_ENGINE_LOG:-/tmp/waorch-podman-service.log}"
IMAGE="${WAORCH_TEST_IMAGE:-localhost/waorch-test:1}"
CONF=/etc/containers/containers.conf

say() { echo "setup-engine: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

# 1. packages
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    say "installing podman and runc"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    as_root apt-get install -y -qq podman runc >&2
fi

# 2. configuration: crun cannot set up cgroups here and raising rlimits is refused
WANT_CONF='[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
if [ ! -f "$CONF" ] || ! grep -q 'runtime = "runc"' "$CONF"; then
    say "writing $CONF"
    as_root mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$WANT_CONF" | as_root tee "$CONF" >/dev/null
fi

# 3. the API service (one per machine; reused when it already answers)
ping_api() { curl -fsS --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }
if ! ping_api; then
    say "starting podman system service on unix://$SOCKET"
    as_root rm -f "$SOCKET"
    # setsid: the service must outlive this script and the shell that ran it
    as_root setsid nohup podman system service --time=0 "unix://$SOCKET" >"$LOG" 2>&1 < /dev/null &
    for _ in $(seq 1 100); do ping_api && break; sleep 0.2; done
    ping_api || { say "the engine API did not answer; see $LOG"; exit 1; }
fi

# 4. the test image: an empty root filesystem; tests bind-mount the host's Python and project
if ! podman image exists "$IMAGE" 2>/dev/null; then
    say "creating $IMAGE from an empty tarball"
    tmp="$(mktemp -d)"
    tar -cf "$tmp/empty.tar" -C "$(mktemp -d)" .
    podman import -q "$tmp/empty.tar" "$IMAGE" >&2
    rm -rf "$tmp"
fi

echo "DOCKER_HOST=unix://$SOCKET"
