"""Budgets hold exactly under real competition: a Celery worker with 4 processes dispatches (routes
and plans slots) while 4 separate claimer processes race for the same sessions on a real Redis."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from celery import Celery

from tests.support.celery_worker import CeleryWorker
from tests.support.policy_support import accept, connected_session, use_policy, windows_ok
from tests.support.waiting import wait_for
from waorch.core import keys
from waorch.policy import pacing

ROOT = Path(__file__).resolve().parents[3]
TENANT = "acme"

POLICY = {
    "default_trust_level": "new",
    "trust_levels": {
        "slow": {"per_minute": 6, "per_day": 1000},
        "new": {"per_minute": 240, "per_day": 30},
        "warming": {"per_minute": 120, "per_day": 20},
    },
    "jitter": 0.3,
    "quiet_hours": None,
    "recipient_daily_cap": None,
    # the point here is the budgets: no cooldown from the dump of work these tests make
    "bursts": {"demand_factor": 1000},
}


def publish_dispatch(redis_url: str, ids: list[str], chunk: int = 4) -> None:
    """What the API does after accepting: dispatch tasks on the `dispatch` queue (small chunks,
    so that the 4 worker processes route and plan concurrently)."""
    client = Celery("test-publisher", broker=redis_url)
    try:
        for start in range(0, len(ids), chunk):
            client.send_task("tasks.dispatch.dispatch_messages", args=[ids[start:start + chunk]],
                             queue="dispatch")
    finally:
        client.close()


def start_claimers(n: int, session_ids: list[str], seconds: float, env: dict,
                   speed: float = 1.0, t0: float | None = None,
                   base: float | None = None) -> list[subprocess.Popen]:
    argv = [sys.executable, "-m", "tests.support.pacing_claimer", "--seconds", str(seconds),
            "--speed", str(speed)]
    if t0 is not None:
        argv += ["--t0", f"{t0:.6f}", "--base", f"{(t0 if base is None else base):.6f}"]
    return [subprocess.Popen(argv + session_ids, cwd=ROOT, env=env) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def claims_by_session(r) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for raw in r.lrange("test:claims", 0, -1):
        claim = json.loads(raw)
        found[claim["session"]].append(claim)
    return found



@pytest.fixture
def stack(r, redis_url, tmp_path, monkeypatch):
    path = use_policy(monkeypatch, tmp_path, POLICY)
    env = {**os.environ, "REDIS_URL": redis_url, "WAORCH_POLICY_FILE": str(path)}
    with CeleryWorker(tmp_path, queues="dispatch", concurrency=4, env=env) as worker:
        yield env, worker


def routed_everything(r, ids: list[str]) -> bool:
    return all(r.hget(keys.message(i), "status") != "queued" for i in ids)


def test_day_budget_and_gap_hold_with_4_dispatchers_and_4_claimers(r, redis_url, stack):
    env, worker = stack
    a = connected_session(r, TENANT, "12025550111")  # new: 240/min, 30/day
    b = connected_session(r, TENANT, "12025550112", trust_level="warming")  # 120/min, 20/day
    c = connected_session(r, TENANT, "12025550113")  # new
    sids = [a["id"], b["id"], c["id"]]
    ids = []
    for s in (a, b, c):
        for i in range(45):
            ids += accept(r, TENANT, f"1415555{1000 + i:04d}", 1, text=f"to {i}", from_requested=s["phone"])
    claimers = start_claimers(4, sids, seconds=120, env=env)
    try:
        publish_dispatch(redis_url, ids)
        wait_for(lambda: routed_everything(r, ids), "every message routed by the workers", timeout=90)
        budgets = {a["id"]: 30, b["id"]: 20, c["id"]: 30}
        wait_for(lambda: all(len(claims_by_session(r)[sid]) >= n for sid, n in budgets.items()),
                   "each session to use its day budget", timeout=90)
        time.sleep(2.0)  # not synchronisation: a window in which no further claim may happen
    finally:
        stop(claimers)
    # a fresh set of claimer processes (a restart): the budget is still spent
    second = start_claimers(4, sids, seconds=3, env=env)
    for proc in second:
        proc.wait(60)
    claims = claims_by_session(r)
    pids = {c["pid"] for cs in claims.values() for c in cs}
    assert len(pids) >= 3, "the claimers did not really compete"
    for sid, budget in budgets.items():
        mine = claims[sid]
        assert len(mine) == budget, f"session {sid}: {len(mine)} claims, budget {budget}"
        assert len({c["msg"] for c in mine}) == budget  # no message claimed twice
        times = sorted(c["now"] for c in mine)
        pace = pacing.pace_for(r.hgetall(keys.session(sid)))
        gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
        assert min(gaps) >= pace.min_gap - 1e-6, f"gap {min(gaps):.3f} < {pace.min_gap:.3f}"
        # jittered: ±30 % spreads the gaps with a deviation of ~0.17 × the interval; without jitter
        # they would only vary by the claimers' few ms of lateness. (Counting distinct gaps at 1 ms
        # failed under load: late claimers cluster, and 29 draws over 150 ms collide anyway.)
        assert statistics.pstdev(gaps) > 0.1 * pace.interval, gaps
        assert len({round(g, 3) for g in gaps}) > len(gaps) * 0.5, gaps
        ok, worst = windows_ok(times, 60, int(pace.per_minute))
        assert ok, worst
        assert windows_ok(times, 86400, budget)[0]
    # the rest waits, planned or routed, for the budget to free up: nothing was dropped
    waiting = [i for i in ids if r.hget(keys.message(i), "status") in ("routed", "scheduled")]
    assert len(waiting) == len(ids) - 80


def test_minute_window_holds_with_4_claimers_on_a_shared_fast_clock(r, redis_url, stack):
    """6/min with jitter 0.3, judged on a virtual clock 30× faster than the wall clock, shared by
    all claimer processes: several minutes of windows in seconds. The clock starts an hour ahead,
    so every planned slot is due and only the pacing rules hold the claimers back."""
    env, worker = stack
    sessions_ = [connected_session(r, TENANT, f"1202555012{i}", trust_level="slow") for i in range(2)]
    sids = [s["id"] for s in sessions_]
    ids = []
    for s in sessions_:
        ids += accept(r, TENANT, "14155550199", 80, from_requested=s["phone"])
    publish_dispatch(redis_url, ids)
    wait_for(lambda: routed_everything(r, ids), "every message routed by the workers", timeout=90)
    speed, t0 = 30.0, time.time()
    claimers = start_claimers(4, sids, seconds=16, env=env, speed=speed, t0=t0, base=t0 + 3600)
    for proc in claimers:
        proc.wait(90)
    claims = claims_by_session(r)
    for sid in sids:
        times = sorted(c["now"] for c in claims[sid])
        virtual_minutes = (times[-1] - times[0]) / 60
        assert virtual_minutes > 5, "too short a run to judge minute windows"
        ok, worst = windows_ok(times, 60, 6)
        assert ok, f"{worst} claims in one 60 s window"
        assert worst == 6  # windows fill up: the minute budget is what holds them back
        assert len(times) >= 4 * virtual_minutes  # the limit binds but the session keeps sending
        gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 10 * 0.7 - 1e-6
        assert len({c["msg"] for c in claims[sid]}) == len(times)
