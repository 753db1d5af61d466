"""The private PostgreSQL and PgBouncer that tests use (tests/support/postgres_server.py)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.postgres_server import SYSTEM_USER, postgres_bindir, start_postgres
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]


def libpq(url: str, sql: str) -> str:
    """`sql` through psql over TCP, the way any libpq client connects."""
    argv = [str(postgres_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_private_server_on_its_own_port_and_directory(postgres_server):
    assert postgres_server.port != 5432
    data_directory = postgres_server.psql("SHOW data_directory")
    assert data_directory == str(postgres_server.base / "data")
    assert postgres_server.psql("SHOW listen_addresses") == "127.0.0.1"
    owner = psutil.Process(postgres_server.process.pid).username()
    assert owner == (SYSTEM_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
    url = postgres_server.create_database("support_probe")
    assert libpq(url, "SELECT current_database()") == "support_probe"
    assert libpq(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT sum(x) FROM t") == "7"
    with pytest.raises(ValueError, match="lower-case"):
        postgres_server.create_database("Bad-Name")


def test_connection_count_sees_clients(postgres_server):
    postgres_server.create_database("count_probe")
    argv = [str(postgres_bindir() / "psql"), "-X", "-q", postgres_server.url("count_probe")]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: postgres_server.connections("count_probe") == 1, "psql to be counted", timeout=30)
    finally:
        holder.communicate("\\q\n", timeout=30)
    wait_for(lambda: postgres_server.connections("count_probe") == 0, "psql to be gone", timeout=30)


def test_stop_ends_server_and_removes_directory():
    server = start_postgres()
    pid, base = server.process.pid, server.base
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not base.exists()


CRASHING_OWNER = r"""
import sys
from tests.support.postgres_server import start_postgres
server = start_postgres()
print(server.process.pid, server.base, flush=True)
sys.stdin.read()
"""


def test_server_dies_with_a_crashed_owner_and_its_directory_is_reclaimed():
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        pid_text, base_text = owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
    postmaster, base = int(pid_text), Path(base_text)
    assert base.exists()
    wait_for(lambda: not psutil.pid_exists(postmaster), "postgres to die with its owner", timeout=30)
    # the next start sweeps directories whose owner process is gone
    start_postgres().stop()
    assert not base.exists()


def test_pgbouncer_transaction_pooling(postgres_server, pgbouncer):
    postgres_server.create_database("bouncer_probe")
    url = pgbouncer.url("bouncer_probe")
    assert libpq(url, "SELECT current_database()") == "bouncer_probe"
    assert libpq(url, "SHOW port") == str(postgres_server.port)  # the server behind it answered
    pools = pgbouncer.show("POOLS")
    assert "bouncer_probe|postgres|" in pools and "|transaction" in pools
    assert pgbouncer.store_url("x").endswith("binary_parameters=yes")


NEONIZE_CLIENT = r"""
import sys
from waorch.simulator.socks5 import Socks5Server
from neonize.client import NewClient
from neonize._binder import ProxySettings

proxy = Socks5Server(refuse_connects=True).start_in_thread()
client = NewClient(name=sys.argv[1], uuid=sys.argv[2])
try:
    client.connect(ProxySettings(proxy_address=proxy.url.replace("socks5h://", "socks5://")))
    print("RESULT returned")
except Exception as exc:
    print(f"RESULT {exc}")
print("DIALS", [request.host for request in proxy.requests])
"""


def test_whatsmeow_store_through_pgbouncer_transaction_pooling(postgres_server, pgbouncer):
    """lib/pq with binary_parameters=yes works behind transaction pooling: the store is created and
    opened, and the client gets as far as dialling WhatsApp (through a refusing local proxy)."""
    pytest.importorskip("neonize")
    postgres_server.create_database("store_probe")
    url = pgbouncer.store_url("store_probe")

    def start(session: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", NEONIZE_CLIENT, url, session], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # the first client creates the schema alone: whatsmeow's upgrade is not safe to run
    # concurrently on an empty database (seen: duplicate key in pg_type_typname_nsp_index)
    outputs = [start("probe-0").communicate(timeout=120)[0]]
    outputs += [child.communicate(timeout=120)[0] for child in [start("probe-1"), start("probe-2")]]
    for output in outputs:
        assert "connection refused" in output, output[-2000:]
        assert "DIALS ['web.whatsapp.com']" in output, output[-2000:]
    tables = postgres_server.psql("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name LIKE 'whatsmeow%'", "store_probe")
    assert int(tables) >= 17
