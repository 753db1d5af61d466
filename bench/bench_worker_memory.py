"""Memory per session worker process (`python -m worker_container`), sim vs neonize transport.

Starts N real worker processes per transport and samples RSS, PSS and USS (psutil, from
/proc/<pid>/smaps) once they are in steady state:
- sim: paired with a real simulator (demo scan) through a real SOCKS5 proxy, idle, connected.
- neonize: the Go library loaded and the client created; its dial to WhatsApp goes to a local
  SOCKS5 proxy that refuses it (no internet here), so it idles in its reconnect backoff. A
  logged-in account (Signal sessions, app state, history sync) will use more: not measurable here.
The orchestrator side is a minimal local HTTP sink (204 to everything, claims long-poll empty).

    .venv/bin/python -m bench.bench_worker_memory [--workers 4] [--settle 15] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import Message
from pathlib import Path

import psutil

from bench.benchmarks_md import write_section
from tests.support.local_http import LocalHttpServer, Reply

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Worker memory"
MB = 1024 * 1024


class Sink(LocalHttpServer):
    """Accepts every worker request; remembers which sessions reported which events."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []  # (session_id, event)
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        data = json.loads(body or b"{}")
        if path.endswith("/claim"):
            time.sleep(min(float(data.get("wait", 0)), 2.0))
        elif "event" in data:
            with self.lock:
                self.events.append((data.get("session_id", ""), data["event"]))
        return 204, {}, b""

    def seen(self, session_id: str, event: str) -> bool:
        with self.lock:
            return (session_id, event) in self.events


def start_workers(transport: str, count: int, sink: Sink, proxy_url: str, sim_wire: str,
                  data_dir: Path) -> list[tuple[str, subprocess.Popen]]:
    workers = []
    for index in range(count):
        session_id = f"{transport}{index}"
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(data_dir),
               "SESSION_ID": session_id, "PHONE": f"49151000{index:05d}", "PROXY_URL": proxy_url,
               "WEBHOOK_URL": sink.url + "/api/webhook", "WEBHOOK_SECRET": "bench-secret",
               "SESSIONS_DIR": str(data_dir / "sessions"), "TRANSPORT": transport, "SIM_WIRE": sim_wire,
               "ENABLE_KEEP_ALIVE": "true", "WORKER_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-m", "worker_container"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers.append((session_id, proc))
    return workers


def wait_ready(workers, sink: Sink, event: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    for session_id, proc in workers:
        while not sink.seen(session_id, event):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {session_id} exited with {proc.returncode} before {event}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {session_id} never reported {event}")
            time.sleep(0.2)


def sample(workers, samples: int = 5) -> dict[str, float]:
    """Median over `samples` one-second samples of the mean per-worker RSS/PSS/USS (MB)."""
    rss, pss, uss, threads = [], [], [], []
    for _ in range(samples):
        infos = [psutil.Process(proc.pid) for _, proc in workers]
        full = [p.memory_full_info() for p in infos]
        rss.append(statistics.mean(m.rss for m in full) / MB)
        pss.append(statistics.mean(m.pss for m in full) / MB)
        uss.append(statistics.mean(m.uss for m in full) / MB)
        threads.append(statistics.mean(p.num_threads() for p in infos))
        time.sleep(1.0)
    return {"rss": statistics.median(rss), "pss": statistics.median(pss), "uss": statistics.median(uss),
            "threads": statistics.median(threads)}


def stop(workers) -> None:
    for _, proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for _, proc in workers:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(transport: str, count: int, settle: float) -> dict[str, float]:
    from waorch.simulator.server import Simulator
    from waorch.simulator.socks5 import Socks5Server
    from waorch.simulator.state import SimConfig

    sink = Sink().start()
    sim = Simulator(config=SimConfig(demo_scan_after=0.3)).start_in_thread()
    # neonize must never reach anything: its proxy refuses every CONNECT.
    proxy = Socks5Server(refuse_connects=(transport == "neonize")).start_in_thread()
    workers = []
    try:
        with tempfile.TemporaryDirectory(prefix="waorch-bench-mem-") as tmp:
            workers = start_workers(transport, count, sink, proxy.url, sim.wire, Path(tmp))
            wait_ready(workers, sink, "CONNECTED" if transport == "sim" else "ERROR")
            time.sleep(settle)  # steady state: imports done, first reconnect backoffs passed
            result = sample(workers)
            stop(workers)
            return result
    finally:
        stop(workers)
        proxy.stop()
        sim.stop()
        sink.stop()


def python_baseline() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.5)
        return psutil.Process(proc.pid).memory_full_info().rss / MB
    finally:
        proc.kill()
        proc.wait()


def report(results: dict[tuple[str, int], dict[str, float]], baseline: float, settle: float) -> str:
    import neonize

    lines = [
        SECTION,
        "",
        f"`python -m bench.bench_worker_memory` on {platform.machine()} Linux, Python "
        f"{platform.python_version()}, neonize {neonize.__version__}, {os.cpu_count()} cores (shared "
        f"machine); {time.strftime('%Y-%m-%d')}. Per worker process, mean over the processes, median of 5 "
        f"samples taken {settle:g} s after the worker reported CONNECTED (sim) / its first ERROR (neonize).",
        "",
        "| transport | workers | RSS MB | PSS MB | USS (private) MB | threads |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (transport, count), r in results.items():
        lines.append(f"| {transport} | {count} | {r['rss']:.1f} | {r['pss']:.1f} | {r['uss']:.1f} | "
                     f"{r['threads']:.0f} |")
    lines += [
        "",
        f"Bare `python -c 'import time; time.sleep(30)'`: {baseline:.1f} MB RSS.",
        "",
        "- RSS counts shared pages (Python, the 19 MB Go library) in full for every process; PSS splits "
        "them between the processes sharing them, USS is what each worker alone costs. Plan host "
        "memory with USS plus the shared part once: containers of one image on one host share the "
        "library's file pages (same overlayfs lower layer), processes of the `process` runner share "
        "them anyway.",
        "- neonize is measured before login: a logged-in session (Signal sessions, app-state and history "
        "sync, media uploads) will need more, and whatsmeow's per-session SQLite cache grows with "
        "contacts. This cannot be measured without WhatsApp.",
        "- The sim worker never imports neonize (the adapter imports it lazily).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="concurrent workers per transport (also 1)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds in steady state before sampling")
    parser.add_argument("--write", action="store_true", help="update the section in BENCHMARKS.md")
    args = parser.parse_args()
    results = {}
    for transport in ("sim", "neonize"):
        for count in sorted({1, args.workers}):
            results[(transport, count)] = measure(transport, count, args.settle)
            print(transport, count, {k: round(v, 1) for k, v in results[(transport, count)].items()},
                  flush=True)
    text = report(results, python_baseline(), args.settle)
    print(text)
    if args.write:
        write_section(SECTION, text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
