"""The pacing decisions of sending/claim.lua and sending/reserve_slots.lua on a real Redis, on a
synthetic clock (the scripts take `now` from the caller): budgets, jitter, pause, cooldown."""

from __future__ import annotations

import random

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy, windows_ok
from waorch.core import keys, redis_client
from waorch.policy import pacing
from waorch.policy.pacing import Pace
from waorch.sending import outbox

TENANT, TO = "acme", "14155550123"


@pytest.fixture
def fast_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, FAST_POLICY)


def queue_for(r, session, n: int, now: float) -> list[str]:
    ids = accept(r, TENANT, TO, n)
    for msg_id in ids:
        assert outbox.route(r, msg_id, session["id"], session["phone"], now=now)
    return ids


def plan_all(r, session, now: float) -> int:
    """Reserve slots for the whole queue at once (one call plans at most a batch)."""
    total = 0
    while n := outbox.reserve_slots(r, session["id"], session["phone"], Pace(per_minute=6000, jitter=0),
                                    now=now):
        total += n
    return total


def drain(r, session_id: str, pace: Pace, start: float, until: float) -> list[float]:
    """Claim greedily at every moment the scripts allow, ACK at once; the claim times."""
    now, times = start, []
    while now < until:
        res = outbox.claim(r, session_id, pace, now=now)
        if res.outcome == "claimed":
            times.append(now)
            outbox.ack(r, session_id, res.message["id"], res.message["lease_token"], f"wa-{now}",
                       sent_at=now, now=now)
            continue
        if res.outcome == "empty":
            break
        assert res.ready_at > now
        now = res.ready_at
    return times


def test_minute_window_binds_where_the_jittered_gap_alone_would_exceed_it(r, fast_policy):
    """jitter 0.9: gaps as short as 0.1 × the interval; still never more than per_minute per 60 s."""
    s = connected_session(r, TENANT, "12025550101")
    queue_for(r, s, 200, now=1000.0)
    pace = Pace(per_minute=6, jitter=0.9, per_day=10_000)
    plan_all(r, s, now=1000.0)
    times = drain(r, s["id"], pace, 1000.0, 1000.0 + 1800)
    ok, worst = windows_ok(times, 60, 6)
    assert ok, f"{worst} claims in one 60 s window"
    assert worst == 6  # the window really was the binding rule at times
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= pace.min_gap - 1e-6
    assert len(times) >= 130  # ~5 per minute over 30 min (a simulation of the rule: 145..161)


def test_day_budget_is_a_rolling_24_hours(r, fast_policy):
    s = connected_session(r, TENANT, "12025550102")
    queue_for(r, s, 30, now=0.0)
    plan_all(r, s, now=0.0)
    pace = Pace(per_minute=60, jitter=0.3, per_day=10)
    first = drain(r, s["id"], pace, 0.0, 3600.0)
    assert len(first) == 10
    blocked = outbox.claim(r, s["id"], pace, now=3600.0)
    # released when the first claim leaves the rolling day, plus jitter (≤ 0.3 × the 1 s interval)
    assert blocked.outcome == "wait"
    assert first[0] + 86400 <= blocked.ready_at <= first[0] + 86400 + 0.3 + 1e-6
    # the day after the first claim, the budget frees up one claim at a time
    again = drain(r, s["id"], pace, first[0] + 86400, first[0] + 86400 + 3600)
    assert 1 <= len(again) <= 10
    ok, worst = windows_ok(first + again, 86400, 10)
    assert ok, worst


def test_gaps_are_jittered_never_below_the_minimum(r, fast_policy):
    s = connected_session(r, TENANT, "12025550103")
    queue_for(r, s, 301, now=0.0)
    plan_all(r, s, now=0.0)
    pace = Pace(per_minute=2, jitter=0.3, per_day=1000)
    times = drain(r, s["id"], pace, 0.0, 24 * 3600.0)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 300
    # 21..39 s from the jittered interval; a full minute window (2 sends) may hold the next one
    # until 60 s after the one before the last, plus up to 9 s of jitter: 60 - 21 + 9 = 48
    assert min(gaps) >= 21.0 - 1e-6 and max(gaps) <= 48.0 + 1e-6
    assert len({round(g, 3) for g in gaps}) > len(gaps) * 0.95  # no fixed beat
    ok, worst = windows_ok(times, 60, 2)
    assert ok, worst
    # both ends of the jitter range are used (a simulation of this rule misses these bounds
    # in none of 20 000 runs of 300 gaps)
    assert min(gaps) < 26 and max(gaps) > 36


def test_reserved_slots_follow_the_jittered_interval(r, fast_policy):
    s = connected_session(r, TENANT, "12025550104")
    ids = queue_for(r, s, 20, now=500.0)
    pace = Pace(per_minute=60, jitter=0.3)
    assert outbox.reserve_slots(r, s["id"], s["phone"], pace, now=500.0, rng=random.Random(3)) == 20
    slots = [r.zscore(keys.session_outbox(s["id"]), i) for i in ids]
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert slots[0] == pytest.approx(500.0)
    assert min(gaps) >= 0.7 - 1e-6 and max(gaps) <= 1.3 + 1e-6
    assert len({round(g, 3) for g in gaps}) > 10


def test_reservation_plans_no_more_than_the_day_budget(r, fast_policy):
    s = connected_session(r, TENANT, "12025550105")
    queue_for(r, s, 30, now=0.0)
    pace = Pace(per_minute=600, jitter=0.3, per_day=12)
    assert outbox.reserve_slots(r, s["id"], s["phone"], pace, now=0.0) == 12
    assert r.llen(keys.session_queue(s["phone"])) == 18  # still routed, waiting for budget


def test_pause_and_cooldown_hold_claims_and_reservations(r, fast_policy):
    s = connected_session(r, TENANT, "12025550106")
    ids = queue_for(r, s, 4, now=100.0)
    pace = Pace(per_minute=60, jitter=0.3, per_day=100)
    r.hset(keys.session(s["id"]), "paused_until", "400")
    outbox.reserve_slots(r, s["id"], s["phone"], pace, now=100.0)
    assert r.zscore(keys.session_outbox(s["id"]), ids[0]) == pytest.approx(400.0)
    res = outbox.claim(r, s["id"], pace, now=401.0)
    assert res.outcome == "claimed"
    # sent: the same person's next message waits for it otherwise (per-recipient order)
    assert outbox.ack(r, s["id"], ids[0], res.message["lease_token"], "wa-1", now=402.0) == "ok"
    r.hset(keys.session_pacing(s["id"]), "cooldown_until", "900")
    held = outbox.claim(r, s["id"], pace, now=500.0)
    assert held.outcome == "wait" and held.ready_at == pytest.approx(900.0)
    assert outbox.claim(r, s["id"], pace, now=900.0).outcome == "claimed"


def test_trust_level_change_under_a_claim_uses_the_new_level(r, fast_policy):
    """The caller read level `trusted`; it is `restricted` by the time the script runs."""
    s = connected_session(r, TENANT, "12025550107", trust_level="trusted")
    queue_for(r, s, 5, now=0.0)
    plan_all(r, s, now=0.0)
    stale = pacing.pace_for(s)
    assert stale.per_minute == 600
    r.hset(keys.session(s["id"]), "trust_level", "restricted")
    assert outbox.claim(r, s["id"], stale, now=10.0).outcome == "claimed"
    nxt = outbox.claim(r, s["id"], stale, now=10.5)
    # restricted is 30/min: 2 s mean, at least 1.4 s; trusted would have allowed 0.07 s
    assert nxt.outcome == "wait" and nxt.ready_at >= 10.0 + 1.4 - 1e-6


def test_pacing_state_survives_a_new_process_view(r, fast_policy, redis_url):
    """Everything lives in Redis: a fresh client (as after a restart) sees the same gate."""
    s = connected_session(r, TENANT, "12025550108")
    queue_for(r, s, 3, now=0.0)
    plan_all(r, s, now=0.0)
    pace = Pace(per_minute=2, jitter=0.3, per_day=50)
    assert outbox.claim(r, s["id"], pace, now=50.0).outcome == "claimed"
    redis_client.reset_clients()
    fresh = redis_client.get_redis(redis_url)
    assert fresh is not r
    later = outbox.claim(fresh, s["id"], pace, now=60.0)
    assert later.outcome == "wait" and later.ready_at >= 50.0 + 21.0 - 1e-6
    assert pacing.usage(fresh, s["id"], now=60.0)["last_day"] == 1


def test_pace_for_takes_the_session_level_and_the_lowest_rung_when_unknown(fast_policy):
    assert pacing.pace_for({"trust_level": "warming"}).per_minute == 240
    unknown = pacing.pace_for({"trust_level": "no-such-level"})
    assert (unknown.per_minute, unknown.per_day) == (30, 20)  # restricted: the bottom rung
    default = pacing.pace_for({"trust_level": ""})
    assert default.per_minute == 120 and default.min_gap == pytest.approx(0.35)
