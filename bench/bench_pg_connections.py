"""PostgreSQL connections held by neonize clients whose whatsmeow store is in PostgreSQL.

Starts a private PostgreSQL (tests/support/postgres_server.py), then N child processes, each with
one `NewClient(name="postgres://...", uuid=...)` that connects through its own SOCKS5 proxy on
127.0.0.1 which refuses the CONNECT (nothing leaves the machine). Opening the store (schema
upgrade, device lookup) happens inside connect, before the dial; the store's pool stays open
after the refused dial, so the children then idle with whatever connections it keeps. The
parent samples pg_stat_activity every 0.1 s: the peak while the clients start, and the steady
count once all have dialled. A logged-in account does more store work (prekeys, app state,
history sync) and can open more connections at once: not measurable here.

With --via pgbouncer-transaction / pgbouncer-session, the clients go through a PgBouncer in that
pool mode (pool size --pool-size); PostgreSQL then sees only PgBouncer's server connections, and
a client whose store failed (e.g. a prepared statement lost by transaction pooling) shows up as
an error instead of the proxy's refusal.

    .venv/bin/python -m bench.bench_pg_connections [--clients 1,5,20] [--via direct]
        [--pool-size 5] [--settle 5] [--params binary_parameters=yes]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postgres_server import PgBouncer, PostgresServer, start_pgbouncer, start_postgres

ROOT = Path(__file__).resolve().parents[1]

CLIENT_SCRIPT = r"""
import sys, threading
from waorch.simulator.socks5 import Socks5Server
from neonize.client import NewClient
from neonize._binder import ProxySettings

url, session = sys.argv[1], sys.argv[2]
proxy = Socks5Server(refuse_connects=True).start_in_thread()
client = NewClient(name=url, uuid=session)
# socks5:// (not socks5h://): whatsmeow refuses socks5h and sends the host name anyway
address = proxy.url.replace("socks5h://", "socks5://")
try:
    client.connect(ProxySettings(proxy_address=address))
    print("RESULT returned", flush=True)
except Exception as exc:
    print(f"RESULT {type(exc).__name__}: {exc}", flush=True)
print(f"DIALS {len(proxy.requests)}", flush=True)
sys.stdin.read()  # stay alive, with the store's pool open, until the parent closes stdin
"""


@dataclass
class Child:
    process: subprocess.Popen
    result: str = ""
    dials: int = -1
    output: list[str] = field(default_factory=list)

    def read(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip()
            self.output.append(line)
            if line.startswith("RESULT "):
                self.result = line[len("RESULT "):]
            elif line.startswith("DIALS "):
                self.dials = int(line.split()[1])


def client_connections(server: PostgresServer, database: str) -> int:
    return server.connections(database)


def run(server: PostgresServer, bouncer: PgBouncer | None, clients: int, settle: float,
        params: dict[str, str]) -> dict:
    database = f"store_{clients}_{int(time.time() * 1000) % 100000}"
    server.create_database(database)
    url = bouncer.url(database, **params) if bouncer else server.url(database) + "".join(
        f"&{k}={v}" for k, v in params.items())
    children = []
    peak = 0
    started = time.monotonic()
    try:
        for index in range(clients):
            process = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, url, f"bench-{index}"],
                                       cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            child = Child(process)
            threading.Thread(target=child.read, daemon=True).start()
            children.append(child)
        deadline = time.monotonic() + 120 + 5 * clients
        while not all(c.dials >= 0 or c.process.poll() is not None for c in children):
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not all finish connecting")
            peak = max(peak, client_connections(server, database))
            time.sleep(0.1)
        ready = time.monotonic() - started
        steady = []
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            steady.append(client_connections(server, database))
            time.sleep(0.1)
        peak = max([peak, *steady])
        tables = int(server.psql("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_name LIKE 'whatsmeow%'", database))
        refused = sum("connection refused" in c.result for c in children)
        errors = [c.result for c in children if "connection refused" not in c.result]
    finally:
        for child in children:
            if child.process.poll() is None:
                child.process.stdin.close()
        for child in children:
            try:
                child.process.wait(20)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
    return {"clients": clients, "peak": peak, "steady_min": min(steady), "steady_max": max(steady),
            "tables": tables, "dialled_and_refused": refused, "errors": errors, "seconds": round(ready, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,5,20", help="comma-separated client counts")
    parser.add_argument("--via", default="direct",
                        choices=["direct", "pgbouncer-transaction", "pgbouncer-session"])
    parser.add_argument("--pool-size", type=int, default=5, help="PgBouncer default_pool_size")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of steady-state sampling")
    parser.add_argument("--params", default="", help="extra URL parameters, e.g. binary_parameters=yes")
    args = parser.parse_args()
    params = dict(item.split("=", 1) for item in args.params.split(",") if item)
    counts = [int(n) for n in re.split(r"[,\s]+", args.clients) if n]

    server = start_postgres(max_connections=max(100, 3 * max(counts) + 10))
    bouncer = None
    try:
        if args.via.startswith("pgbouncer-"):
            bouncer = start_pgbouncer(server, pool_mode=args.via.split("-", 1)[1], pool_size=args.pool_size)
        print(f"PostgreSQL {server.psql('SHOW server_version')}, via {args.via}"
              f"{f' (pool size {args.pool_size})' if bouncer else ''}, URL parameters {params or 'none'}")
        print("clients  peak  steady(min-max)  tables  dialled  errors  seconds")
        for count in counts:
            row = run(server, bouncer, count, args.settle, params)
            print(f"{row['clients']:>7}  {row['peak']:>4}  {row['steady_min']:>6}-{row['steady_max']:<8}"
                  f"  {row['tables']:>6}  {row['dialled_and_refused']:>7}  {len(row['errors']):>6}"
                  f"  {row['seconds']:>7}")
            for error in sorted(set(row["errors"]))[:5]:
                print(f"         error: {error[:200]}")
    finally:
        if bouncer:
            bouncer.stop()
        server.stop()


if __name__ == "__main__":
    main()
