"""A private PostgreSQL, and a PgBouncer in front of it, for one test run.

Never the machine's own server: initdb into a fresh directory, listen on 127.0.0.1 on a free port
and on a unix socket in that directory, trust authentication (local test use only). initdb,
postgres and pgbouncer refuse to run as root, so under root they run as the `postgres` system
user that Debian's package creates (scripts/setup-postgres.sh installs the binaries).

The directory lives under /tmp (pytest's own temp dirs are root-only, the `postgres` user cannot
enter them). The server gets SIGKILL when the process that started it dies, and a later start
removes directories whose owner process is gone, so a crashed run leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from waorch.launcher.redis_server import free_port

log = logging.getLogger(__name__)

SYSTEM_USER = "postgres"  # runs initdb/postgres/pgbouncer when we are root
SUPERUSER = "postgres"  # the database role initdb creates, trusted on every connection
TEMP_PREFIX = "waorch-pg-"
PR_SET_PDEATHSIG = 1
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (run scripts/setup-postgres.sh)."""


def postgres_bindir() -> Path:
    """The directory with initdb and postgres: WAORCH_PG_BINDIR, else Debian's newest, else PATH."""
    configured = os.environ.get("WAORCH_PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise PostgresUnavailable("no initdb/postgres found (run scripts/setup-postgres.sh)")


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
    if not found:
        raise PostgresUnavailable("no pgbouncer found (run scripts/setup-postgres.sh)")
    return found


def _as_server_user() -> dict:
    """Popen arguments that drop to the `postgres` user when we are root, and die with us."""
    def die_with_parent() -> None:
        # after the user switch (a credential change clears the parent-death signal)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    extra: dict = {"preexec_fn": die_with_parent}
    if os.geteuid() == 0:
        account = pwd.getpwnam(SYSTEM_USER)
        extra.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                     env={"PATH": "/usr/bin:/bin", "HOME": account.pw_dir, "LC_ALL": "C.UTF-8"})
    return extra


def _make_private_directory() -> Path:
    _remove_abandoned_directories()
    base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    (base / "owner.pid").write_text(str(os.getpid()))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SYSTEM_USER)
        os.chown(base, account.pw_uid, account.pw_gid)
    return base


def _remove_abandoned_directories() -> None:
    for base in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(base, ignore_errors=True)


def _stop_process(process: subprocess.Popen, first_signal: int, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(first_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class PostgresServer:
    """A postgres child process with its own data directory."""

    bindir: Path
    base: Path
    port: int
    process: subprocess.Popen
    databases: list[str] = field(default_factory=list)

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A URL for lib/pq (whatsmeow) and libpq alike; TLS is off on this server."""
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def psql(self, sql: str, database: str = "postgres", timeout: float = 60) -> str:
        """Run `sql` over the unix socket and return psql's unaligned output."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database `name` (lower-case identifier) and return its URL."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        self.psql(f"CREATE DATABASE {name}")
        self.databases.append(name)
        return self.url(name)

    def connections(self, database: str | None = None) -> int:
        """Client backends connected (to `database`, or to any), not counting this query's own."""
        where = "backend_type = 'client backend' AND pid <> pg_backend_pid()"
        if database is not None:
            if not _NAME.fullmatch(database):
                raise ValueError(f"database name {database!r}")
            where += f" AND datname = '{database}'"
        return int(self.psql(f"SELECT count(*) FROM pg_stat_activity WHERE {where}"))

    def is_ready(self) -> bool:
        done = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir),
                               "-p", str(self.port), "-U", SUPERUSER, "-t", "2"], timeout=10)
        return done.returncode == 0

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), then remove the directory."""
        _stop_process(self.process, signal.SIGINT, timeout)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_postgres(max_connections: int = 100, timeout: float = 60,
                   settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb a fresh cluster and start it; returns once it accepts connections."""
    bindir = postgres_bindir()
    base = _make_private_directory()
    data = base / "data"
    try:
        done = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True, timeout=120, **_as_server_user())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        port = free_port()
        # speed over durability: a test cluster is thrown away, and the machine is shared
        options = {"listen_addresses": "127.0.0.1", "port": str(port),
                   "unix_socket_directories": str(base), "max_connections": str(max_connections),
                   "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                   "shared_buffers": "16MB", "logging_collector": "off", **(settings or {})}
        argv = [str(bindir / "postgres"), "-D", str(data)]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        with open(base / "postgres.log", "ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       **_as_server_user())
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    server = PostgresServer(bindir, base, port, process)
    deadline = time.monotonic() + timeout
    while not server.is_ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path.exists() else ""
            server.stop()
            raise RuntimeError(f"postgres on port {port} did not become ready (rc {process.poll()}):\n{tail}")
        time.sleep(0.1)
    log.info("private postgres on 127.0.0.1:%s (%s)", port, base)
    return server


@dataclass
class PgBouncer:
    """A pgbouncer child process in front of a PostgresServer.

    Transaction pooling is what saves server connections (each idle whatsmeow store holds one
    otherwise). lib/pq, which whatsmeow uses, sends each parametrised query as an unnamed
    statement in two round trips (Parse+Sync, then Bind+Execute+Sync); under transaction pooling
    the second can reach another server connection ("unnamed prepared statement does not exist",
    "bind message supplies 1 parameters, but prepared statement "" requires 2": seen here with
    20 clients on a pool of 2). `binary_parameters=yes` makes lib/pq send all of it in one go:
    `store_url` adds it. libpq clients (psql, pg_dump) reject that parameter: use `url`.
    """

    server: PostgresServer
    base: Path
    port: int
    pool_mode: str
    process: subprocess.Popen

    def url(self, database: str = "postgres", **params: str) -> str:
        extra = "".join(f"&{key}={value}" for key, value in params.items())
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}?sslmode=disable{extra}"

    def store_url(self, database: str = "postgres") -> str:
        """The URL for a whatsmeow store (lib/pq) behind this PgBouncer."""
        return self.url(database, binary_parameters="yes")

    def show(self, what: str) -> str:
        """`SHOW <what>` on pgbouncer's admin console (POOLS, SERVERS, CLIENTS, STATS ...)."""
        done = subprocess.run(
            [str(self.server.bindir / "psql"), "-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", SUPERUSER, "-d", "pgbouncer", "-c", f"SHOW {what}"],
            capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"pgbouncer SHOW {what} failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self, timeout: float = 15) -> None:
        _stop_process(self.process, signal.SIGINT, timeout)  # SIGINT: safe shutdown
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_pgbouncer(server: PostgresServer, pool_mode: str = "transaction", pool_size: int = 10,
                    max_client_conn: int = 2000, timeout: float = 30) -> PgBouncer:
    """Start pgbouncer on a free 127.0.0.1 port; every database name maps to `server`."""
    if pool_mode not in ("session", "transaction", "statement"):
        raise ValueError(f"pool_mode {pool_mode!r}")
    binary = pgbouncer_binary()
    base = _make_private_directory()
    port = free_port()
    (base / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
    (base / "pgbouncer.ini").write_text("\n".join([
        "[databases]",
        f"* = host={server.socket_dir} port={server.port} user={SUPERUSER}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        f"unix_socket_dir = {base}",
        "auth_type = trust",
        f"auth_file = {base / 'userlist.txt'}",
        f"admin_users = {SUPERUSER}",
        f"pool_mode = {pool_mode}",
        f"default_pool_size = {pool_size}",
        f"max_client_conn = {max_client_conn}",
        # lib/pq sends extra_float_digits in its startup packet, which pgbouncer refuses otherwise
        "ignore_startup_parameters = extra_float_digits",
        f"logfile = {base / 'pgbouncer.log'}",
        "",
    ]))
    if os.geteuid() == 0:
        uid, gid = pwd.getpwnam(SYSTEM_USER).pw_uid, pwd.getpwnam(SYSTEM_USER).pw_gid
        for path in base.iterdir():
            os.chown(path, uid, gid)
    try:
        process = subprocess.Popen([binary, str(base / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_server_user())
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    bouncer = PgBouncer(server, base, port, pool_mode, process)
    deadline = time.monotonic() + timeout
    while True:
        ready = subprocess.run([str(server.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port),
                                "-U", SUPERUSER, "-d", "postgres", "-t", "2"], timeout=10)
        if ready.returncode == 0:
            return bouncer
        if process.poll() is not None or time.monotonic() > deadline:
            logfile = base / "pgbouncer.log"
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            bouncer.stop()
            raise RuntimeError(f"pgbouncer on port {port} not ready (rc {process.poll()}):\n{tail}")
        time.sleep(0.1)
