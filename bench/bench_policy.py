"""The same campaign sent twice through `waorch run --demo` with the simulator's ban model on:
once under the anti-ban policy, once with pacing effectively disabled. Reports bans and throughput.

Each run gets its own Redis and state directory: a fresh stack with its two demo sessions (paired
by the simulator through their sticky demo proxies), the ban model set over the simulator API,
then the campaign (one message to each of N distinct people) sent with POST /api/send/batch.

Run: .venv/bin/python bench/bench_policy.py [--minutes 3] [--messages 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.conftest import Stack, start_stack, stop_stack  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from waorch.launcher.demo import DEMO_PHONES  # noqa: E402
from waorch.launcher.redis_server import start_local_redis  # noqa: E402

BAN_MODEL = {"per_minute": 6, "burst_10s": 3, "max_sources": 1}

# The built-in policy, with quiet hours off so that the result does not depend on the hour.
WITH_POLICY = {"quiet_hours": None}
# "Pacing disabled": budgets no account would survive, no jitter, no burst brakes, no caps.
WITHOUT_PACING = {
    "trust_levels": {"new": {"per_minute": 600, "per_day": 1_000_000}},
    "jitter": 0,
    "quiet_hours": None,
    "recipient_daily_cap": None,
    "bursts": {"demand_factor": 1000, "send_factor": 1000},
}


def get(stack: Stack, path: str):
    return stack.api.get(path).json()


def sim(stack: Stack, method: str, path: str, **kwargs):
    return requests.request(method, stack.sim + path, timeout=30, **kwargs).json()


def campaign(stack: Stack, n: int) -> list[str]:
    people = [f"+49151{10_000_000 + i:08d}" for i in range(n)]
    answer = stack.api.post("/api/send/batch", json={
        "messages": [{"to": p, "text": f"Your appointment reminder #{i}"} for i, p in enumerate(people)]})
    answer.raise_for_status()
    return answer.json()["ids"]


def run_once(name: str, policy: dict, minutes: float, n: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-policy-{name}-"))
    redis = start_local_redis(workdir / "redis", appendonly=False)
    policy_file = workdir / "policy.json"
    policy_file.write_text(json.dumps(policy))
    stack = None
    try:
        stack = start_stack(workdir, redis.url, {},
                            ["--demo", "--policy", str(policy_file), "--workers", "2"])
        wait_for(lambda: sum(s["status"] == "connected" for s in get(stack, "/api/sessions")["sessions"])
                 == len(DEMO_PHONES), "both demo sessions connected", timeout=180, interval=0.5)
        sim(stack, "PUT", "/sim/ban-model", json=BAN_MODEL)
        ids = campaign(stack, n)
        started = time.time()
        first_ban: float | None = None
        while time.time() - started < minutes * 60:
            accounts = [sim(stack, "GET", f"/sim/accounts/{p}") for p in DEMO_PHONES]
            if first_ban is None and any(a["state"] == "banned" for a in accounts):
                first_ban = time.time() - started
            time.sleep(2)
        elapsed = time.time() - started
        sent = [m for p in DEMO_PHONES for m in sim(stack, "GET", "/sim/messages", params={"from": p})]
        accounts = [sim(stack, "GET", f"/sim/accounts/{p}") for p in DEMO_PHONES]
        statuses: dict[str, int] = {}
        for msg_id in ids:
            status = get(stack, f"/api/messages/{msg_id}")["status"]
            statuses[status] = statuses.get(status, 0) + 1
        times = sorted(m["at"] for m in sent)
        active = (times[-1] - times[0]) / 60 if len(times) > 1 else 0.0
        return {
            "run": name, "messages": n, "minutes": round(elapsed / 60, 2),
            "delivered_to_network": len(sent),
            "throughput_per_min": round(len(sent) / (elapsed / 60), 2),
            "rate_while_sending_per_min": round(len(sent) / active, 2) if active else None,
            "bans": sum(a["state"] == "banned" for a in accounts),
            "ban_reasons": [a["banned_reason"] for a in accounts if a["banned_reason"]],
            "first_ban_after_s": None if first_ban is None else round(first_ban, 1),
            "message_states": statuses,
        }
    finally:
        if stack is not None:
            stop_stack(stack)
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0, help="how long each campaign runs")
    ap.add_argument("--messages", type=int, default=60, help="people in the campaign (one message each)")
    args = ap.parse_args()
    results = []
    for name, policy in (("policy", WITH_POLICY), ("pacing disabled", WITHOUT_PACING)):
        print(f"running the campaign with {name} ...", file=sys.stderr)
        results.append(run_once(name, policy, args.minutes, args.messages))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                 f"{platform.python_version()}", "ban_model": BAN_MODEL,
                      "sessions": len(DEMO_PHONES), "results": results}, indent=2))


if __name__ == "__main__":
    main()
