"""The simulator holding a fleet: memory per account, autopair rate, and the cost of saving it.

Starts `waorch sim --autopair --state-dir TMP` as its own process, then from this process opens N
wire connections straight to it (no SOCKS5: this measures the simulator, not the proxies), each
pairing by autopair, reconnecting with its creds and staying connected; every account then sends
one message. It reports the simulator's RSS (psutil) at each stage, per account, the pairing
rate, the state file size and the time a save took; then it stops the simulator (final save),
starts it again on the same directory, and reports the load time and RSS with the accounts
loaded but no connection. Separately, in this process, it measures with tracemalloc what the
network's own records cost per account (no sockets): the figure the `Account` layout decides.

    .venv/bin/python -m bench.bench_sim_fleet [--accounts 10000] [--parallel 200] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.benchmarks_md import write_section
from waorch.simulator.state import Network, SimConfig

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Simulator fleet"
MB = 1024 * 1024
CLI = [sys.executable, "-c", "import sys; from waorch.cli.main import cli; sys.exit(cli(prog_name='waorch'))"]


def phone(n: int) -> str:
    return f"1555{n:07d}"


class Sim:
    """`waorch sim` as a child process."""

    def __init__(self, state_dir: Path) -> None:
        argv = [*CLI, "sim", "--port", "0", "--wire-port", "0", "--autopair", "--state-dir", str(state_dir),
                "--receipt-delay", "0.2", "--read-delay", "0.5"]
        started = time.monotonic()
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().split()[-1]
        host, port = self.process.stdout.readline().split()[-1].rsplit(":", 1)
        self.wire = (host, int(port))
        self.start_seconds = time.monotonic() - started
        self.ps = psutil.Process(self.process.pid)

    def rss(self) -> float:
        return self.ps.memory_info().rss / MB

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/sim/stats", timeout=60).json()

    def stop(self) -> float:
        started = time.monotonic()
        self.process.terminate()
        self.process.wait(timeout=300)
        return time.monotonic() - started


async def read_event(reader: asyncio.StreamReader, kind: str) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"closed while waiting for {kind}")
        event = json.loads(line)
        if event.get("ev") == kind:
            return event


async def bring_up(wire: tuple[str, int], n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Pair by autopair, then log in and stay connected."""
    def hello(creds: str | None) -> bytes:
        return json.dumps({"op": "hello", "phone": phone(n), "session": f"s{n}", "device": {"os": "Linux"},
                           "creds": creds}).encode() + b"\n"

    reader, writer = await asyncio.open_connection(*wire)
    writer.write(hello(None))
    creds = (await read_event(reader, "paired"))["creds"]
    writer.close()
    reader, writer = await asyncio.open_connection(*wire)
    writer.write(hello(creds))
    await read_event(reader, "connected")
    return reader, writer


async def fleet(sim: Sim, accounts: int, parallel: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(parallel)
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(n: int) -> None:
        async with gate:
            connections.append(await bring_up(sim.wire, n))

    rss_empty = sim.rss()
    started = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(accounts)))
    pairing_seconds = time.monotonic() - started
    await asyncio.sleep(1)
    rss_connected = sim.rss()
    for n, (_, writer) in enumerate(connections):
        writer.write(json.dumps({"op": "send", "ref": "1", "to": phone(accounts + n), "text": f"hello {n}",
                                 "id": f"bench-{n}"}).encode() + b"\n")
    await asyncio.gather(*(read_event(reader, "send_result") for reader, _ in connections))
    await asyncio.sleep(4)  # receipts, and at least one save after the last change
    stats = sim.stats()
    rss_sent = sim.rss()
    for _, writer in connections:
        writer.close()
    return {"rss_empty": rss_empty, "rss_connected": rss_connected, "rss_sent": rss_sent,
            "pairing_seconds": pairing_seconds, "stats": stats}


async def records_only(accounts: int) -> float:
    """Bytes per account of the network's own records (tracemalloc), paired and logged in once."""

    class Peer:
        def __init__(self) -> None:
            self.source_address, self.phone, self.session, self.logged_in = "127.0.0.2", None, None, False
            self.events: list[dict[str, Any]] = []

        def send(self, event: dict[str, Any]) -> None:
            self.events.append(event)

        def close(self) -> None:
            pass

    network = Network(SimConfig(autopair=True))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for n in range(accounts):
        network.hello(Peer(), phone(n), f"s{n}", {"os": "Linux"}, None)
    await asyncio.sleep(0)  # the autopair scans
    for n in range(accounts):
        account = network.accounts[phone(n)]
        peer = Peer()
        network.hello(peer, phone(n), f"s{n}", {"os": "Linux"}, account.creds)
        network.gone(peer)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / accounts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=200, help="pairings under way at once")
    parser.add_argument("--write", action="store_true", help=f"update '{SECTION}' in BENCHMARKS.md")
    args = parser.parse_args()

    per_record = asyncio.run(records_only(args.accounts))
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "sim"
        sim = Sim(state)
        try:
            run = asyncio.run(fleet(sim, args.accounts, args.parallel))
        finally:
            stop_seconds = sim.stop()
        size = (state / "network.json").stat().st_size
        again = Sim(state)
        try:
            time.sleep(1)
            reloaded = again.stats()
            rss_loaded = again.rss()
        finally:
            again.stop()

    n = args.accounts
    store = run["stats"]["store"]
    pairing, grown = run["pairing_seconds"], (run["rss_connected"] - run["rss_empty"]) * MB / n / 1024
    rows = [
        ("accounts", f"{n}"),
        ("connected at once", f"{run['stats']['states'].get('connected', 0)}"),
        ("autopair + login, whole fleet", f"{pairing:.1f} s ({n / pairing:.0f}/s)"),
        ("simulator RSS, empty", f"{run['rss_empty']:.1f} MB"),
        ("RSS, all connected", f"{run['rss_connected']:.1f} MB ({grown:.1f} KB per account)"),
        ("RSS, after one message each", f"{run['rss_sent']:.1f} MB"),
        ("network records only (tracemalloc)", f"{per_record / 1024:.2f} KB per account"),
        ("state file", f"{size / MB:.1f} MB"),
        ("last save while running",
         f"encode {store.get('encode_seconds')} s, total {store.get('save_seconds')} s"),
        ("stop (final save)", f"{stop_seconds:.1f} s"),
        ("restart: accounts loaded", f"{reloaded['accounts']} in {again.start_seconds:.1f} s to listening"),
        ("RSS after restart, no connections", f"{rss_loaded:.1f} MB"),
        ("duplicates / second connections",
         f"{run['stats']['duplicates_delivered']} / {run['stats']['second_connections']}"),
    ]
    text = "\n".join([
        SECTION, "",
        f"`python -m bench.bench_sim_fleet --accounts {n}` on {platform.machine()}, "
        f"{psutil.cpu_count()} CPUs, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "", "| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""])
    print(text)
    if args.write:
        write_section(SECTION, text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
