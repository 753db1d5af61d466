"""Orchestrator benchmarks: recovery time of a killed worker, and Redis memory per session.

1. Recovery: a real stack (simulator, SOCKS5 proxy, gateway over HTTP, `waorch supervisor` with
   real `python -m worker_container` processes, sim transport). N sessions are paired; then, one
   at a time, a worker is SIGKILLed and the time until its session is CONNECTED again (stored
   credentials, no new QR) is measured.
2. Redis memory: a fresh redis-server; sessions are created through waorch.sessions.registry (proxies,
   profiles, registry) and given a typical event history; used_memory before/after / N.

    .venv/bin/python -m bench.bench_orchestrator [--sessions 4] [--kills 10] [--memory 1000] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.benchmarks_md import write_section
from tests.support.waiting import wait_for
from waorch.fleet import lifecycle, worker_events

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Orchestrator"
_wait = partial(wait_for, timeout=120.0, interval=0.01)


def _fresh_redis(tmp: Path):
    from waorch.launcher.redis_server import start_local_redis

    server = start_local_redis(tmp / "redis", appendonly=False)
    os.environ["REDIS_URL"] = server.url
    os.environ.setdefault("WAORCH_SECRET_KEY", "bench-key")
    return server


def _reset_settings() -> None:
    from waorch.core import redis_client, settings

    settings.get.cache_clear()
    redis_client.reset_clients()


def recovery(n_sessions: int, kills: int) -> dict:
    """Seconds from SIGKILL of a worker to its session CONNECTED again (process runner)."""
    import requests

    from app import create_app
    from tests.support.api_client import ThreadedGateway
    from tests.support.supervisor_process import running_supervisor
    from waorch.core import keys
    from waorch.core.redis_client import get_redis
    from waorch.proxies.pool import ProxyPool
    from waorch.runners.process import ProcessRunner
    from waorch.simulator.server import Simulator
    from waorch.simulator.socks5 import Socks5Server

    tmp = Path(tempfile.mkdtemp(prefix="waorch-bench-"))
    server = _fresh_redis(tmp)
    sim = Simulator().start_in_thread()
    proxies = [Socks5Server(host=f"127.0.0.{2 + i}", outbound_source=f"127.0.0.{2 + i}").start_in_thread()
               for i in range((n_sessions + 3) // 4)]
    os.environ.update({"WAORCH_DATA_DIR": str(tmp / "data"), "WAORCH_TRANSPORT": "sim",
                       "WAORCH_SIM_WIRE": sim.wire, "WAORCH_PING_INTERVAL": "5", "WAORCH_RUNNER": "process"})
    _reset_settings()
    gateway = ThreadedGateway(create_app())
    os.environ["WAORCH_PUBLIC_URL"] = gateway.url
    _reset_settings()
    r = get_redis()
    samples: list[float] = []
    try:
        with gateway, running_supervisor({**os.environ}, tmp / "supervisor.log", stop_timeout=60):
            _wait(lambda: r.exists("runner:process:heartbeat"), "the supervisor")
            for p in proxies:
                ProxyPool(r).add(p.url)
            ids = []
            for i in range(n_sessions):
                phone = f"49151230{i:05d}"
                sid = lifecycle.create_session(r, "bench", phone)["id"]
                _wait(lambda sid=sid: r.exists(keys.session_qr(sid)), "a QR")
                requests.post(f"{sim.url}/sim/accounts/{phone}/scan", timeout=10).raise_for_status()
                ids.append(sid)
            for sid in ids:
                _wait(lambda sid=sid: r.hget(keys.session(sid), "status") == "connected", "CONNECTED")
            runner = ProcessRunner(r)
            for k in range(kills):
                sid = ids[k % len(ids)]
                pid = _wait(lambda sid=sid: (runner.details().get(sid) or {}).get("pid"), "the worker pid")
                killed = time.time()
                os.kill(pid, signal.SIGKILL)
                _wait(lambda sid=sid, killed=killed: r.hget(keys.session(sid), "status") == "connected"
                      and float(r.hget(keys.session(sid), "connected_at") or 0) > killed, "CONNECTED again")
                samples.append(float(r.hget(keys.session(sid), "connected_at")) - killed)
                time.sleep(1.0)  # let the new worker settle before the next kill
    finally:
        for p in proxies:
            p.stop()
        sim.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return _stats(samples)


def _stats(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(samples), "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
            "max": ordered[-1], "min": ordered[0]}


def memory(n: int) -> dict:
    """Redis used_memory per session: just created, and with a full event history."""
    from waorch.core.redis_client import get_redis
    from waorch.proxies.pool import ProxyPool
    from waorch.runners.process import COMMANDS, HEARTBEAT
    from waorch.sessions import registry as sessions

    tmp = Path(tempfile.mkdtemp(prefix="waorch-bench-"))
    server = _fresh_redis(tmp)
    os.environ.update({"WAORCH_RUNNER": "process", "WAORCH_PROFILE_CEILING": str(n)})
    _reset_settings()
    r = get_redis()
    try:
        pool = ProxyPool(r)
        for i in range((n + 3) // 4):
            pool.add(f"socks5h://user{i}:secret{i}@10.{i // 250 % 250}.{i % 250}.1:1080")
        r.set(HEARTBEAT, "bench")  # commands are queued as for a live supervisor, then dropped
        r.execute_command("MEMORY", "PURGE")
        base = int(r.info("memory")["used_memory"])
        ids = [lifecycle.create_session(r, "bench", f"4915200{i:06d}")["id"] for i in range(n)]
        r.delete(COMMANDS, HEARTBEAT)
        created = int(r.info("memory")["used_memory"])
        now = time.time()
        for sid in ids:
            worker_events.apply(r, sid, "QR", {"qr": "2@" + "x" * 200}, now)
            worker_events.apply(r, sid, "CONNECTED", {"jid": "x@s.whatsapp.net"}, now)
            ping = {"connected": True, "sent": 120, "failed": 1, "claimed": 121, "uptime": 86400,
                    "pid": 12345}
            for _ in range(sessions.EVENTS_CAP):
                worker_events.apply(r, sid, "PING", ping, now)
        steady = int(r.info("memory")["used_memory"])
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "created_per_session": (created - base) / n, "steady_per_session": (steady - base) / n}


def report(rec: dict | None, mem: dict | None, args) -> str:
    lines = [SECTION, "",
             f"`python -m bench.bench_orchestrator --sessions {args.sessions} --kills {args.kills} "
             f"--memory {args.memory}` on {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.", ""]
    if rec:
        lines += ["Worker death → session CONNECTED again (process runner: `waorch supervisor`, real worker "
                  "program, sim transport through a SOCKS5 proxy, webhooks to the gateway over HTTP; "
                  "login with the credentials kept in the session's data directory, no new QR):", "",
                  "| kills | median | p95 | max | min |", "|---|---|---|---|---|",
                  f"| {rec['n']} | {rec['median']:.2f} s | {rec['p95']:.2f} s | {rec['max']:.2f} s "
                  f"| {rec['min']:.2f} s |", "",
                  "The supervisor restarts a worker at once after its first crash (then 1, 2, 4 … s up to "
                  "WAORCH_RESTART_BACKOFF_MAX, reset after 60 s of uptime); kills cycle over the sessions "
                  "about every 2 s, so a session killed again within a minute of its restart waits out "
                  "a 1 s backoff (the slow end of the table). The rest is the worker's Python start-up "
                  "and its log-in through the proxy. A worker that hangs instead of dying is found by "
                  "the watchdog after WAORCH_PING_TIMEOUT (60 s) plus up to one 15 s beat period.", ""]
    if mem:
        lines += [f"Redis memory per session ({mem['n']} sessions, 4 per proxy; registry hash, status key, "
                  "proxy slot, sticky proxy and profile mappings, queued runner command dropped):", "",
                  "| state | bytes per session |", "|---|---|",
                  f"| just created | {mem['created_per_session']:.0f} |",
                  f"| with a full event history (200 events, mostly PINGs) "
                  f"| {mem['steady_per_session']:.0f} |",
                  "", "The capped event list (`session:events:<id>`) dominates; message keys are not "
                  "counted.",
                  ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--memory", type=int, default=1000, help="sessions to measure memory with (0: skip)")
    parser.add_argument("--write", action="store_true", help="update the section in BENCHMARKS.md")
    args = parser.parse_args()
    rec = recovery(args.sessions, args.kills) if args.kills else None
    print("recovery", json.dumps(rec), flush=True)
    mem = memory(args.memory) if args.memory else None
    print("memory", json.dumps(mem), flush=True)
    text = report(rec, mem, args)
    print(text)
    if args.write:
        write_section(SECTION, text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
