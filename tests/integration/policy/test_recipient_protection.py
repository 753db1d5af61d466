"""Quiet hours in the recipient's time zone and the per-recipient daily cap, decided by the Lua
scripts on a real Redis (synthetic clock: the scripts take `now` from the caller)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.core import keys
from waorch.messages import records as messages
from waorch.policy.pacing import pace_for
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox

SF = "14155550123"  # America/Los_Angeles
DELHI = "919876543210"  # Asia/Calcutta
LA = ZoneInfo("America/Los_Angeles")


def at_la(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=LA).timestamp()


@pytest.fixture
def quiet_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, {**FAST_POLICY,
                                              "quiet_hours": {"start": "21:00", "end": "08:00"}})


@pytest.fixture
def capped_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, {**FAST_POLICY, "recipient_daily_cap": 2})


def sent(r, session, claim, now: float) -> str:
    """The worker sent what it claimed (ACK), so that its lease does not run out and return it."""
    assert claim.outcome == "claimed", claim
    outbox.ack(r, session["id"], claim.message["id"], claim.message["lease_token"], "wa-x", now=now)
    return claim.message["id"]


def history_details(r, msg_id: str) -> list[str]:
    return [h.get("detail", "") for h in messages.history(r, msg_id)]


def test_quiet_hours_hold_messages_until_the_recipients_morning(r, quiet_policy):
    s = connected_session(r, "acme", "12025550141")
    night = at_la(10, 23, 0)  # 23:00 in San Francisco, 12:30 in Delhi
    [to_sf] = accept(r, "acme", SF, 1)
    [to_delhi] = accept(r, "acme", DELHI, 1)
    assert dispatching.dispatch_message(r, to_sf, now=night) == "routed"
    assert dispatching.dispatch_message(r, to_delhi, now=night) == "routed"
    morning = at_la(11, 8, 0)
    # held messages leave in their order within 90 s after the quiet hours end
    assert morning < r.zscore(keys.session_outbox(s["id"]), to_sf) <= morning + 90
    assert "held: quiet hours in the recipient's time zone" in history_details(r, to_sf)
    pace = pace_for(s)
    # the person in Delhi is awake: their message goes; San Francisco's waits, not dropped
    first = outbox.claim(r, s["id"], pace, now=night + 1)
    assert sent(r, s, first, night + 2) == to_delhi
    waiting = outbox.claim(r, s["id"], pace, now=night + 3600)
    assert waiting.outcome == "wait" and morning < waiting.ready_at <= morning + 90
    assert messages.get_message(r, to_sf)["status"] == "scheduled"
    woke = outbox.claim(r, s["id"], pace, now=waiting.ready_at)
    assert woke.outcome == "claimed" and woke.message["id"] == to_sf


def test_quiet_hours_are_checked_again_at_claim(r, quiet_policy):
    """Planned at 20:59 for a slot before 21:00, but the worker only asks at 21:05."""
    s = connected_session(r, "acme", "12025550142")
    [msg] = accept(r, "acme", SF, 1)
    dispatching.dispatch_message(r, msg, now=at_la(10, 20, 59))
    assert r.zscore(keys.session_outbox(s["id"]), msg) == pytest.approx(at_la(10, 20, 59))
    late = outbox.claim(r, s["id"], pace_for(s), now=at_la(10, 21, 5))
    assert late.outcome == "wait" and at_la(11, 8, 0) < late.ready_at <= at_la(11, 8, 0) + 90
    assert messages.get_message(r, msg)["status"] == "scheduled"
    assert history_details(r, msg)[-1] == "held: quiet hours in the recipient's time zone"
    assert outbox.claim(r, s["id"], pace_for(s), now=late.ready_at).message["id"] == msg


def test_quiet_hours_off_in_the_policy(r, monkeypatch, tmp_path):
    use_policy(monkeypatch, tmp_path, FAST_POLICY)  # quiet_hours: null
    s = connected_session(r, "acme", "12025550143")
    [msg] = accept(r, "acme", SF, 1)
    dispatching.dispatch_message(r, msg, now=at_la(10, 23, 0))
    assert outbox.claim(r, s["id"], pace_for(s), now=at_la(10, 23, 0)).outcome == "claimed"


def test_per_recipient_daily_cap_across_the_tenants_sessions(r, capped_policy):
    a = connected_session(r, "acme", "12025550144")
    b = connected_session(r, "acme", "12025550145")
    other = connected_session(r, "globex", "12025550146")
    t0 = 1_000_000.0
    to_person_a = accept(r, "acme", SF, 2, from_requested=a["phone"])
    to_person_b = accept(r, "acme", SF, 2, from_requested=b["phone"])
    to_someone_else = accept(r, "acme", DELHI, 1, from_requested=b["phone"])
    globex_msgs = accept(r, "globex", SF, 2)
    for msg in to_person_a + to_person_b + to_someone_else + globex_msgs:
        assert dispatching.dispatch_message(r, msg, now=t0) == "routed"
    got_a = [sent(r, a, outbox.claim(r, a["id"], pace_for(a), now=t0 + 10 * i), t0 + 10 * i + 1)
             for i in range(2)]
    assert got_a == to_person_a
    # b's messages to the same person: the tenant already sent 2 today; Delhi is not affected
    got_b = outbox.claim(r, b["id"], pace_for(b), now=t0 + 30)
    assert sent(r, b, got_b, t0 + 31) == to_someone_else[0]
    held = outbox.claim(r, b["id"], pace_for(b), now=t0 + 40)
    assert held.outcome == "wait" and t0 + 86400 < held.ready_at <= t0 + 86400 + 90
    assert all(messages.get_message(r, m)["status"] == "scheduled" for m in to_person_b)
    assert "held: per-recipient daily cap reached" in history_details(r, to_person_b[0])
    # another tenant has its own count
    assert outbox.claim(r, other["id"], pace_for(other), now=t0 + 50).outcome == "claimed"
    # a rolling day later the person may hear from the tenant again, one message per freed slot
    next_day = outbox.claim(r, b["id"], pace_for(b), now=held.ready_at)
    assert sent(r, b, next_day, held.ready_at + 1) == to_person_b[0]  # in the order they were sent
    after = outbox.claim(r, b["id"], pace_for(b), now=held.ready_at + 5)
    # the second held message waits for the next freed slot (the claim at t0 + 10, a day later)
    assert after.outcome == "wait" and t0 + 10 + 86400 < after.ready_at <= t0 + 10 + 86400 + 90


def test_a_retry_of_the_same_message_does_not_count_twice(r, capped_policy):
    s = connected_session(r, "acme", "12025550147")
    ids = accept(r, "acme", SF, 2)
    for msg in ids:
        dispatching.dispatch_message(r, msg, now=100.0)
    c1 = outbox.claim(r, s["id"], pace_for(s), now=100.0)
    assert outbox.nack(r, s["id"], c1.message["id"], c1.message["lease_token"], "timeout", True,
                       now=101.0) == "retry"
    # the second message waits for the first one (per-recipient order), not for the cap
    assert outbox.claim(r, s["id"], pace_for(s), now=102.0).outcome == "wait"
    c3 = outbox.claim(r, s["id"], pace_for(s), now=110.0)  # the retry, after its backoff
    assert sent(r, s, c3, 110.5) == ids[0]
    c4 = outbox.claim(r, s["id"], pace_for(s), now=112.0)  # cap 2: the retry counted once
    assert c4.outcome == "claimed" and c4.message["id"] == ids[1]
