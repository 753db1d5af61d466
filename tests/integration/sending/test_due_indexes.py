"""The beat tasks of the message pipeline read due-time indexes, not every session: slot planning
(sessions:pump:due) and expired leases (leases:due), on a real Redis."""

from __future__ import annotations

import time

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.core import keys
from waorch.fleet import worker_events
from waorch.policy.pacing import pace_for
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions

# 2 a minute: a 600 s horizon holds about 20 slots; `tiny` has a day budget of 3
POLICY = {**FAST_POLICY, "trust_levels": {**FAST_POLICY["trust_levels"],
                                          "new": {"per_minute": 2, "per_day": 1000},
                                          "tiny": {"per_minute": 120, "per_day": 3}},
          "bursts": {"demand_factor": 1000}}


@pytest.fixture(autouse=True)
def policy_in_force(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, POLICY)


def routed(r, session: dict, n: int, prefix: str) -> list[str]:
    """`n` messages routed to `session` (its FIFO), without slots yet."""
    ids = [m for i in range(n) for m in accept(r, "acme", f"{prefix}{i:04d}", 1)]
    for msg_id in ids:
        assert outbox.route(r, msg_id, session["id"], session["phone"])
    return ids


def pump_due(r) -> dict[str, float]:
    return dict(r.zrange(keys.SESSIONS_PUMP_DUE, 0, -1, withscores=True))


def test_the_pump_plans_exactly_the_sessions_that_are_due(r):
    dispatching.ensure_indexes(r)
    busy = connected_session(r, "acme", "12025550201")
    capped = connected_session(r, "acme", "12025550202", trust_level="tiny")
    dead = connected_session(r, "acme", "12025550203")
    hidden = connected_session(r, "acme", "12025550204")
    idle = [connected_session(r, "acme", f"120255503{i:02d}") for i in range(5)]
    routed(r, busy, 30, "1415551")
    routed(r, capped, 5, "1415552")
    routed(r, dead, 2, "1415553")
    routed(r, hidden, 1, "1415554")
    r.zrem(keys.SESSIONS_PUMP_DUE, hidden["id"])  # as if its entry had never been written
    sessions.transition(r, dead["id"], "banned")  # (its messages are rerouting's business)
    before = time.time()
    assert set(pump_due(r)) == {busy["id"], capped["id"], dead["id"]}
    assert all(due <= before for due in pump_due(r).values())

    scheduled = dispatching.pump_session_queues(r, now=before)
    horizon_slots = r.zcard(keys.session_outbox(busy["id"]))
    assert 15 <= horizon_slots <= 30  # about 600 s / 30 s, bounded by the horizon
    assert r.zcard(keys.session_outbox(capped["id"])) == 3  # the day budget
    assert scheduled == horizon_slots + 3
    assert r.llen(keys.session_queue(dead["phone"])) == 2  # a dead session gets no slots...
    assert r.llen(keys.session_queue(hidden["phone"])) == 1  # ...and nothing walks the others
    assert all(r.zcard(keys.session_outbox(s["id"])) == 0 for s in idle + [dead, hidden])

    due = pump_due(r)
    assert set(due) == {busy["id"], capped["id"]}  # the dead one left the index
    next_slot = float(r.hget(keys.session_pacing(busy["id"]), "next_slot"))
    assert due[busy["id"]] == pytest.approx(next_slot - 600, abs=0.01)  # when the horizon reaches it
    assert before + 290 <= due[capped["id"]] <= before + 301  # nothing sent yet: the re-check
    assert dispatching.pump_session_queues(r, now=before + 1) == 0  # nothing due yet
    later = due[busy["id"]] + 0.5
    assert dispatching.pump_session_queues(r, now=later) >= 1
    assert r.zcard(keys.session_outbox(busy["id"])) > horizon_slots


def test_expired_leases_come_back_through_the_due_index(r):
    dispatching.ensure_indexes(r)
    s = connected_session(r, "acme", "12025550211")
    [first, second] = routed(r, s, 2, "1415556")
    dispatching.pump_session_queues(r)
    pace = pace_for(s)
    t = time.time()
    claim = outbox.claim(r, s["id"], pace, now=t, lease_seconds=30)
    assert claim.outcome == "claimed" and claim.message["id"] == first
    assert r.zscore(keys.LEASES_DUE, s["id"]) == pytest.approx(t + 30, abs=0.001)
    assert dispatching.requeue_all_expired(r, now=t + 10) == 0
    assert dispatching.requeue_all_expired(r, now=t + 31) == 1
    assert r.hget(keys.message(first), "status") == "scheduled"
    assert r.zscore(keys.LEASES_DUE, s["id"]) is None  # no lease left: no entry

    # a claim whose process died before it entered leases:due (sending/claim.lua alone)
    result = outbox.claim_in_redis(r, s["id"], pace, now=t + 100, lease=30, token="t1")
    assert result[0] == "claimed"
    assert dispatching.requeue_all_expired(r, now=t + 200) == 0  # not found: nothing walks the fleet
    worker_events.apply(r, s["id"], "PING", {"connected": True}, time.time())  # the worker's next PING
    assert r.zscore(keys.LEASES_DUE, s["id"]) == pytest.approx(t + 130, abs=0.001)
    assert dispatching.requeue_all_expired(r, now=t + 200) == 1
    assert r.zcard(keys.session_leases(s["id"])) == 0
    assert {r.hget(keys.message(m), "status") for m in (first, second)} == {"scheduled"}
