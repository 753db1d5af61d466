#!/usr/bin/env bash
# Installs Debian's docker.io and starts ONE standalone dockerd beside podman (which keeps
# /run/waorch-podman.sock, scripts/setup-engine.sh), with its own socket, data root, exec root and
# pid file, no iptables and no bridge, then makes it a single-node Swarm manager (podman has no
# Swarm API). Idempotent: a daemon that answers is reused. Needs root.
# The last line printed is WAORCH_SWARM_HOST=unix://... (tests/integration/test_runner_swarm.py).
set -euo pipefail

SOCKET="${WAORCH_SWARM_SOCKET:-/run/waorch-dockerd.sock}"
DATA_ROOT="${WAORCH_SWARM_DATA_ROOT:-/var/lib/waorch-dockerd}"
# exec-root holds containerd's sockets: keep the path short (unix socket paths are limited)
EXEC_ROOT="${WAORCH_SWARM_EXEC_ROOT:-/run/waorch-dockerd}"
PIDFILE="$EXEC_ROOT.pid"
LOG="${WAORCH_SWARM_LOG:-/tmp/waorch-dockerd.log}"
IMAGE="${WAORCH_TEST_IMAGE:-localhost/waorch-test:1}"
DOCKER=/usr/bin/docker  # another docker CLI may come first in PATH
say() { echo "setup-dockerd: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (installs docker.io, starts a daemon)"
    exit 1
fi

# 1. packages, without letting the package start its own daemon
if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$DOCKER" ]; then
    say "installing docker.io"
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    if [ -e "$policy" ]; then had_policy=1; cp -p "$policy" "$policy.waorch-saved"; fi
    restore_policy() {
        if [ "$had_policy" = 1 ]; then mv -f "$policy.waorch-saved" "$policy"; else rm -f "$policy"; fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    export DEBIAN_FRONTEND=noninteractive
    # another apt run (a parallel setup script) may hold the lock: wait for it
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends docker.io >&2
    restore_policy
    trap - EXIT
fi

# 2. the daemon (one per machine; reused when it already answers)
api() { "$DOCKER" -H "unix://$SOCKET" "$@"; }
ping_api() { curl -fsS --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

overlay_works() {
    # overlay2 needs an overlay mount on the data root's file system; try one
    local t
    t="$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX")" || return 1
    mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
    if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
        umount "$t/m"; rm -rf "$t"; return 0
    fi
    rm -rf "$t"; return 1
}

if ! ping_api; then
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        say "dockerd $(cat "$PIDFILE") runs but does not answer on $SOCKET; see $LOG"
        exit 1
    fi
    driver=overlay2
    overlay_works || driver=vfs
    say "starting dockerd on unix://$SOCKET (storage $driver, data $DATA_ROOT)"
    rm -f "$SOCKET" "$PIDFILE"
    # setsid: the daemon must outlive this script and the shell that ran it
    setsid nohup /usr/sbin/dockerd --host "unix://$SOCKET" --data-root "$DATA_ROOT" \
        --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" --storage-driver "$driver" \
        --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
        >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 150); do ping_api && break; sleep 0.2; done
    ping_api || { say "dockerd did not answer; see $LOG"; exit 1; }
fi

# 3. a single-node Swarm (listening on loopback only)
state="$(api info --format '{{.Swarm.LocalNodeState}}/{{.Swarm.ControlAvailable}}')"
case "$state" in
    active/true) ;;
    inactive/*)
        say "swarm init"
        # its output shows the join token: keep it out of logs
        api swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null ;;
    *)
        say "this dockerd is in Swarm state $state, not a manager: leave or fix it by hand"
        exit 1 ;;
esac

# 4. the test image: an empty root file system, as in podman (scripts/setup-engine.sh); tests
# bind-mount the host's Python and project
if ! api image inspect "$IMAGE" >/dev/null 2>&1; then
    say "creating $IMAGE from an empty tarball"
    tmp="$(mktemp -d)"
    tar -cf "$tmp/empty.tar" -C "$(mktemp -d)" .
    api import "$tmp/empty.tar" "$IMAGE" >/dev/null
    rm -rf "$tmp"
fi

echo "WAORCH_SWARM_HOST=unix://$SOCKET"
