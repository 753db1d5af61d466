"""Burst detection on a real Redis: a pile of work far above the budget, and a send log faster than
the level allows, each put the session into cooldown and raise one `burst_detected` alert."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.alerts import events as alert_events
from waorch.core import keys
from waorch.policy import bursts, trust
from waorch.policy.pacing import Pace, pace_for
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions

POLICY = {**FAST_POLICY,
          "trust_levels": {"restricted": {"per_minute": 1, "per_day": 5},
                           "new": {"per_minute": 6, "per_day": 10},
                           "warming": {"per_minute": 12, "per_day": 100}},
          "bursts": {"demand_factor": 2, "send_window_seconds": 60, "send_factor": 1.0,
                     "cooldown_seconds": {"send": 300, "demand": 120}}}


@pytest.fixture(autouse=True)
def burst_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, POLICY)


def burst_alerts(r, state: str = "raised") -> list[dict]:
    return [e for e in alert_events.list_events(r)
            if e["kind"] == alert_events.BURST_DETECTED and e["state"] == state]


def test_demand_far_above_the_budget_cools_the_session_down_and_alerts_once(r):
    s = connected_session(r, "acme", "12025550161")  # new: 10/day → a demand burst above 20
    ids = accept(r, "acme", "14155550123", 25, from_requested=s["phone"])
    t0 = time.time()
    outcomes = [dispatching.dispatch_message(r, m, now=t0) for m in ids]
    assert set(outcomes) == {"routed"}
    [alert] = burst_alerts(r)
    assert alert["subject"] == f"{s['id']}:demand" and alert["data"]["pending"] == 21
    cooldown = float(r.hget(keys.session_pacing(s["id"]), "cooldown_until"))
    assert cooldown == pytest.approx(t0 + 120, abs=1)
    events = [json.loads(x) for x in r.lrange(keys.session_events(s["id"]), 0, -1)]
    assert any(e["event"] == "BURST" and e["data"]["source"] == "demand" for e in events)
    # nothing goes out during the cooldown, then sending starts at the level's pace
    held = outbox.claim(r, s["id"], pace_for(s), now=t0 + 60)
    assert held.outcome == "wait" and held.ready_at >= cooldown
    assert outbox.claim(r, s["id"], pace_for(s), now=cooldown + 1).outcome == "claimed"
    # still one alert for this episode; it resolves once the cooldown is over
    assert bursts.resolve_finished(r, now=t0 + 60) == 0
    assert bursts.resolve_finished(r, now=cooldown + 1) == 1
    assert len(burst_alerts(r, "resolved")) == 1
    assert not [a for a in alert_events.active_alerts(r) if a["kind"] == alert_events.BURST_DETECTED]


def test_demand_episode_rearms_only_after_the_pile_went_down(r):
    s = connected_session(r, "acme", "12025550162")
    for m in accept(r, "acme", "14155550123", 22, from_requested=s["phone"]):
        dispatching.dispatch_message(r, m)
    assert bursts.check_demand(r, s) == "over"  # same episode: no second cooldown
    # the pile shrinks (sent, or cancelled by an operator) under the threshold
    for m in r.zrange(keys.session_outbox(s["id"]), 0, -1)[:10]:
        outbox.fail(r, m, "expired", session_id=s["id"])
    assert bursts.check_demand(r, s) == "ok"
    bursts.resolve_finished(r, now=time.time() + 10_000)
    for m in accept(r, "acme", "14155550124", 12, from_requested=s["phone"]):
        dispatching.dispatch_message(r, m)
    assert len(burst_alerts(r)) == 2


def test_sends_faster_than_the_level_allows_are_a_burst(r):
    """The worker reports 7 sends within 10 s where `new` allows 6 per minute (e.g. it sat on its
    claims and flushed them at once): cooldown, alert, and one trust rung down."""
    s = connected_session(r, "acme", "12025550163")
    # to 9 people: a claim to the same person waits for the previous one's ACK (recipient order)
    ids = [m for i in range(9) for m in accept(r, "acme", f"141555501{i:02d}", 1,
                                               from_requested=s["phone"])]
    t0 = 1_000_000.0
    for m in ids:
        outbox.route(r, m, s["id"], s["phone"], now=t0)
    outbox.reserve_slots(r, s["id"], s["phone"], Pace(per_minute=6000, jitter=0), now=t0)
    claims = []
    now = t0
    while len(claims) < 8:
        res = outbox.claim(r, s["id"], pace_for(sessions.get_session(r, s["id"])), now=now)
        if res.outcome == "claimed":
            claims.append(res.message)
        now = res.ready_at if res.outcome == "wait" else now + 0.001
    flush = now + 5
    outcomes = [bursts_after_ack(r, s, c, flush + i) for i, c in enumerate(claims)]
    assert outcomes[:6] == ["ok"] * 6 and outcomes[6] == "burst" and outcomes[7] == "cooling"
    [alert] = burst_alerts(r)
    assert alert["subject"] == f"{s['id']}:send" and alert["data"]["sent"] == 7
    cooldown = float(r.hget(keys.session_pacing(s["id"]), "cooldown_until"))
    assert cooldown >= time.time() + 290
    assert sessions.get_session(r, s["id"])["trust_level"] == "restricted"
    [entry] = trust.history(r, s["id"])
    assert entry["reason"] == "send burst: 7 sends in 60 s" and entry["to"] == "restricted"
    nxt = outbox.claim(r, s["id"], pace_for(sessions.get_session(r, s["id"])))
    assert nxt.outcome == "wait" and nxt.ready_at >= cooldown - 0.01


def bursts_after_ack(r, session, claim, sent_at) -> str:
    """ACK through outbox.ack (as the gateway does); returns the send-log verdict for this send."""
    before = len(burst_alerts(r))
    assert outbox.ack(r, session["id"], claim["id"], claim["lease_token"], f"wa-{claim['id']}",
                      sent_at=sent_at) == "ok"
    cooldown = r.hget(keys.session_pacing(session["id"]), "cooldown_until")
    if len(burst_alerts(r)) > before:
        return "burst"
    return "cooling" if cooldown else "ok"
