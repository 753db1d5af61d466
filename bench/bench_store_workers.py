"""PostgreSQL connections held by N neonize *workers* on one session store (waorch's own path).

Unlike bench_pg_connections.py (a bare NewClient per process), each child runs the worker's
neonize transport as a session would: the schema check/creation under the advisory lock, the
device check, then `NewClient(new_device=True)` with `application_name=waorch-<session>`, dialling
through a SOCKS5 proxy on 127.0.0.1 that refuses (nothing leaves the machine). All N start at
once on an empty database. The parent samples pg_stat_activity every 0.2 s: the peak while they
start, the steady count once all have dialled (total and per session), and any child that failed.

    .venv/bin/python -m bench.bench_store_workers [--workers 1,10,20] [--via direct|pgbouncer]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from tests.support.postgres_server import start_pgbouncer, start_postgres

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, threading, tempfile
from waorch.simulator.socks5 import Socks5Server
from worker_container.transports.base import TransportConfig
from worker_container.transports.neonize_adapter import NeonizeStartError, NeonizeTransport

url, session = sys.argv[1], sys.argv[2]
proxy = Socks5Server(refuse_connects=True).start_in_thread()
dialled = threading.Event()
def emit(event, data):
    if event == "ERROR" and data.get("code") in ("PROXY_FAILED", "CONNECTION_LOST"):
        dialled.set()
config = TransportConfig(session_id=session, phone="49151" + session[-7:], proxy_url=proxy.url,
                         session_dir=tempfile.mkdtemp(), store=url)
transport = NeonizeTransport(config, emit)
try:
    transport.start()
except NeonizeStartError as exc:
    print(f"RESULT start error {exc.code}: {exc.detail}", flush=True)
    sys.stdin.read(); sys.exit(0)
print("RESULT dialled" if dialled.wait(120) else "RESULT no dial", flush=True)
sys.stdin.read()
transport.stop()
"""


def sample(server, database: str) -> tuple[int, dict[str, int]]:
    rows = server.psql("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = "
                       f"'{database}' AND pid <> pg_backend_pid() GROUP BY 1", database=database)
    counts = {name: int(n) for name, n in (line.split("|") for line in rows.splitlines() if line)}
    return sum(counts.values()), counts


def run(server, bouncer, workers: int, settle: float) -> dict:
    database = f"bw_{uuid.uuid4().hex[:8]}"
    server.create_database(database)
    url = bouncer.store_url(database) if bouncer else server.url(database)
    started = time.monotonic()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, url, f"s{i:07d}"], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
                for i in range(workers)]
    results: list[str] = []

    def read(child) -> None:
        for line in child.stdout:
            if line.startswith("RESULT "):
                results.append(line[7:].strip())
                return

    readers = [threading.Thread(target=read, args=(c,), daemon=True) for c in children]
    for thread in readers:
        thread.start()
    peak = 0
    while len(results) < workers and time.monotonic() - started < 300:
        peak = max(peak, sample(server, database)[0])
        time.sleep(0.2)
    steady: list[int] = []
    per_session: dict[str, int] = {}
    until = time.monotonic() + settle
    while time.monotonic() < until:
        total, counts = sample(server, database)
        steady.append(total)
        per_session = counts
        time.sleep(0.2)
    for child in children:
        child.stdin.close()
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    workers_apps = [n for name, n in per_session.items() if name.startswith("waorch-s")
                    and not name.endswith("-schema")]
    return {"workers": workers, "peak": peak, "steady": (min(steady), max(steady)),
            "per_worker": (min(workers_apps, default=0), max(workers_apps, default=0)),
            "schema_leftover": sum(n for name, n in per_session.items() if name.endswith("-schema")),
            "failed": [r for r in results if r != "dialled"], "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,10,20")
    parser.add_argument("--via", choices=("direct", "pgbouncer"), default="direct")
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    server = start_postgres()
    bouncer = start_pgbouncer(server, pool_size=args.pool_size) if args.via == "pgbouncer" else None
    try:
        print(f"PostgreSQL {server.psql('SHOW server_version')}, via {args.via}"
              + (f" (transaction pooling, pool {args.pool_size})" if bouncer else ""))
        print("workers  peak  steady  per-worker  schema-pool  failed  seconds")
        for n in (int(x) for x in args.workers.split(",")):
            row = run(server, bouncer, n, args.settle)
            print(f"{row['workers']:>7}  {row['peak']:>4}  {row['steady'][0]}-{row['steady'][1]:<4}  "
                  f"{row['per_worker'][0]}-{row['per_worker'][1]:<8}  {row['schema_leftover']:>11}  "
                  f"{len(row['failed']):>6}  {row['seconds']:>7.1f}")
            for failure in row["failed"][:3]:
                print(f"         {failure[:200]}")
    finally:
        if bouncer:
            bouncer.stop()
        server.stop()


if __name__ == "__main__":
    main()
