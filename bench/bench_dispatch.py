"""Dispatch cost against fleet size: the per-message path of before issue 12 and the batch path
(sending/dispatch_batch.lua over the sender index), side by side in one run.

For each fleet size N: a fresh database on a local redis-server (waorch.launcher.redis_server),
N connected `trusted` sessions in one tenant, M accepted messages to M different people, then the
dispatch function called directly (no Celery): `dispatch_batch(r, ids)` for the new path, and the
old `dispatch_message` for each id (bench/legacy_dispatch.py) for the old one. Reported per path:
messages routed per second, ms per message, and Redis commands per message (INFO commandstats
delta: script calls and the commands they run, pipelines included). The old path reads every
session per message, so at large N it runs fewer messages (--old-budget) to finish; its figures
are per message all the same. The built-in policy is in force (quiet hours on: each message's
window is computed with phonenumbers in Python; --no-quiet-hours takes that work out). Redis
keeps its AOF on, as in production. Recipients are +1 (NANP) numbers, phonenumbers' slowest:
the country code has 25 regions to tell apart.

The batch path runs --rounds times per fleet size, the sizes interleaved in each round (the
median run is reported), the old one once.

Run: .venv/bin/python bench/bench_dispatch.py [--sessions 10,100,1000,10000] [--messages 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import legacy_dispatch  # noqa: E402
from waorch.core import keys, settings  # noqa: E402
from waorch.launcher.redis_server import start_local_redis  # noqa: E402
from waorch.policy import recipient_protection  # noqa: E402
from waorch.policy import rules as policy  # noqa: E402
from waorch.sending import accept as acceptance  # noqa: E402
from waorch.sending import dispatch  # noqa: E402
from waorch.sessions import registry  # noqa: E402

TENANT = "bench"


def command_count(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")


def redis_cpu(r: redis.Redis) -> float:
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def make_fleet(r: redis.Redis, n: int) -> None:
    """N sessions of one tenant, trusted, connected (registered and PINGed as a worker would)."""
    now = f"{time.time():.3f}"
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            sid = f"s{i:05d}"
            registry.CREATE.queue(r, pipe, session_id=sid, tenant=TENANT, phone=f"4930{i:08d}", now=now,
                                  status="starting", fields=["trust_level", "trusted", "salt", "x"])
            registry.RECORD_PING.queue(r, pipe, session_id=sid, now=now, connected="1", event="",
                                       events_cap=10, counters=[])
        pipe.execute()


_runs = iter(range(100))


def accept_messages(r: redis.Redis, m: int) -> list[str]:
    """M messages to M people no earlier run wrote to (no cached phone number parse)."""
    run = next(_runs)
    ids: list[str] = []
    for start in range(0, m, 500):
        records = [{"id": acceptance.new_message_id(), "to": f"1{200 + i % 700:03d}{run:02d}{i:05d}",
                    "text": f"reminder {i}"} for i in range(start, min(m, start + 500))]
        acceptance.store(r, TENANT, records, {"ids": []})
        ids += [rec["id"] for rec in records]
    return ids


def measure(r: redis.Redis, n: int, m: int, path: str) -> dict:
    r.flushdb()
    make_fleet(r, n)
    ids = accept_messages(r, m)
    dispatch.ensure_indexes(r)  # as the beat does on its first round (not part of a dispatch)
    before, cpu_before = command_count(r), redis_cpu(r)
    started = time.perf_counter()
    if path == "batch":
        counts = dict(dispatch.dispatch_batch(r, ids))
    else:
        counts = {}
        for msg_id in ids:
            outcome = legacy_dispatch.dispatch_message(r, msg_id)
            counts[outcome] = counts.get(outcome, 0) + 1
    elapsed = time.perf_counter() - started
    cpu = redis_cpu(r) - cpu_before
    commands = command_count(r) - before  # INFO itself is not counted
    routed = counts.get("routed", 0)
    senders = len({r.hget(keys.message(i), "session") for i in ids})
    return {"sessions": n, "path": path, "messages": m, "routed": routed, "outcomes": counts,
            "senders": senders, "seconds": round(elapsed, 3),
            "msgs_per_s": round(routed / elapsed, 1) if elapsed else None,
            "ms_per_msg": round(1000 * elapsed / max(1, routed), 3),
            "commands_per_msg": round(commands / max(1, m), 1),
            "redis_cpu_ms_per_msg": round(1000 * cpu / max(1, m), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="10,100,1000,10000")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--old-budget", type=int, default=20000,
                        help="old path: at most this many session reads per run (messages x sessions)")
    parser.add_argument("--rounds", type=int, default=3, help="batch path: runs per fleet size (median)")
    parser.add_argument("--no-quiet-hours", action="store_true",
                        help="a policy without quiet hours: no phonenumbers work in the router")
    args = parser.parse_args()
    os.environ.pop("WAORCH_POLICY_FILE", None)
    with tempfile.TemporaryDirectory() as policy_dir:
        if args.no_quiet_hours:
            path = Path(policy_dir) / "policy.json"
            path.write_text(json.dumps({"quiet_hours": None}))
            os.environ["WAORCH_POLICY_FILE"] = str(path)
        settings.get.cache_clear()
        policy.reset()
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    # phonenumbers loads its metadata on first use: not part of any path's figure
    recipient_protection.quiet_window("12025550100", policy.get().quiet_hours)
    rows = []
    with tempfile.TemporaryDirectory() as state:
        server = start_local_redis(Path(state) / "redis")
        try:
            r = redis.Redis.from_url(server.url, decode_responses=True)
            sizes = [int(x) for x in args.sessions.split(",")]
            # rounds interleave the fleet sizes: a machine whose load changes meanwhile (shared
            # CI) weighs on every size alike
            runs: dict[int, list[dict]] = {n: [] for n in sizes}
            for _ in range(args.rounds):
                for n in sizes:
                    runs[n].append(measure(r, n, args.messages, "batch"))
                    print(json.dumps(runs[n][-1]), flush=True)
            for n in sizes:
                rows.append(sorted(runs[n], key=lambda run: run["msgs_per_s"])[len(runs[n]) // 2])
                old_m = min(args.messages, max(5, args.old_budget // n))
                rows.append(measure(r, n, old_m, "per-message"))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    print(f"\n{platform.node()}, {os.cpu_count()} cores, redis-server local, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, quiet hours {'off' if args.no_quiet_hours else 'on'}, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| sessions | path | messages | routed/s | ms/msg | Redis commands/msg | Redis CPU ms/msg |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['sessions']:,} | {row['path']} | {row['messages']:,} | {row['msgs_per_s']:,} | "
              f"{row['ms_per_msg']} | {row['commands_per_msg']} | {row['redis_cpu_ms_per_msg']} |")


if __name__ == "__main__":
    main()
