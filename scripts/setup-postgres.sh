#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries and PgBouncer for the tests (tests/support/
# postgres_server.py starts a private server per test run: no system cluster or daemon is used).
# Idempotent. The last line printed is WAORCH_PG_BINDIR, the directory with initdb and postgres.
set -euo pipefail

say() { echo "setup-postgres: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

pg_bindir() {
    # the newest installed major version
    find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1 | xargs -r dirname
}

have_pgbouncer() { command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; }

if [ -z "$(pg_bindir)" ] || ! have_pgbouncer; then
    say "installing postgresql and pgbouncer"
    # a policy-rc.d that exits 101 keeps the packages' daemons from being started by the install;
    # one that is already there (e.g. in a container image) is left alone
    POLICY=/usr/sbin/policy-rc.d
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
        as_root chmod 755 "$POLICY"
        trap 'as_root rm -f "$POLICY"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql pgbouncer >&2
fi

BINDIR="$(pg_bindir)"
[ -x "$BINDIR/initdb" ] || { say "initdb not found under /usr/lib/postgresql"; exit 1; }
# initdb and postgres refuse to run as root: the test support runs them as this system user
id postgres >/dev/null 2>&1 || { say "no 'postgres' system user (the package creates it)"; exit 1; }
echo "WAORCH_PG_BINDIR=$BINDIR"
