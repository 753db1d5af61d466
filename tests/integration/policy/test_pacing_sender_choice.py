"""Sender choice on a real Redis: explicit `from`, then the recipient's sticky sender, then the
healthy session with the most spare budget."""

from __future__ import annotations

import time

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.core import keys
from waorch.fleet import worker_events
from waorch.messages import records as messages
from waorch.sending import dispatch as dispatching

POLICY = {**FAST_POLICY, "trust_levels": {"new": {"per_minute": 120, "per_day": 100},
                                          "trusted": {"per_minute": 120, "per_day": 1000}}}


@pytest.fixture(autouse=True)
def policy_in_force(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, POLICY)


def sender_of(r, msg_id: str) -> str:
    return r.hget(keys.message(msg_id), "session")


def route_one(r, to: str, **fields) -> str:
    [msg] = accept(r, "acme", to, 1, **fields)
    assert dispatching.dispatch_message(r, msg) == "routed", messages.get_message(r, msg)
    return msg


def test_most_spare_budget_wins_and_the_recipient_stays_with_it(r):
    small = connected_session(r, "acme", "12025550171")  # 100/day
    big = connected_session(r, "acme", "12025550172", trust_level="trusted")  # 1000/day
    first = route_one(r, "14155550001")
    assert sender_of(r, first) == big["id"]
    assert "most spare budget" in messages.history(r, first)[1]["detail"]
    # the same person always hears from the same number, whatever the budgets say later
    r.hset(keys.session(big["id"]), "trust_level", "new")
    for _ in range(3):
        assert sender_of(r, route_one(r, "14155550001")) == big["id"]
    # a new person goes to the session with more left: big has 4 pending of 100, small 0 of 100
    assert sender_of(r, route_one(r, "14155550002")) == small["id"]
    # remembered for half a year after the last message, then forgotten (no key per person forever)
    ttl = r.ttl(keys.sticky_sender("acme", "14155550001"))
    assert dispatching.STICKY_SENDER_TTL - 60 < ttl <= dispatching.STICKY_SENDER_TTL


def test_explicit_from_wins_even_over_the_sticky_sender(r):
    a = connected_session(r, "acme", "12025550173")
    b = connected_session(r, "acme", "12025550174")
    sticky = sender_of(r, route_one(r, "14155550003"))
    other = b if sticky == a["id"] else a
    assert sender_of(r, route_one(r, "14155550003", from_requested=other["phone"])) == other["id"]
    [nobody] = accept(r, "acme", "14155550003", 1, from_requested="12025550999")
    assert dispatching.dispatch_message(r, nobody) == "failed"
    assert messages.get_message(r, nobody)["reason"] == "no_session"


def test_cooling_paused_and_disconnected_sessions_are_passed_over(r):
    cooling = connected_session(r, "acme", "12025550175", trust_level="trusted")
    paused = connected_session(r, "acme", "12025550176", trust_level="trusted")
    offline = connected_session(r, "acme", "12025550177", trust_level="trusted")
    healthy = connected_session(r, "acme", "12025550178")  # the least budget of all
    r.hset(keys.session_pacing(cooling["id"]), "cooldown_until", f"{time.time() + 600:.3f}")
    r.hset(keys.session(paused["id"]), "paused_until", f"{time.time() + 600:.3f}")
    worker_events.apply(r, offline["id"], "ERROR", {"code": "CONNECTION_LOST"}, time.time())
    assert sender_of(r, route_one(r, "14155550004")) == healthy["id"]


def test_a_dead_sticky_sender_is_replaced(r):
    a = connected_session(r, "acme", "12025550179")
    first = route_one(r, "14155550005")
    assert sender_of(r, first) == a["id"]
    worker_events.apply(r, a["id"], "ERROR", {"code": "BANNED"}, time.time())
    b = connected_session(r, "acme", "12025550180")
    assert sender_of(r, route_one(r, "14155550005")) == b["id"]
    assert r.get(keys.sticky_sender("acme", "14155550005")) == b["id"]
