"""Messages of a lost sender reach another one: a banned, stopped or deleted session's unsent
messages are rerouted to a healthy session of the tenant (explicit `from` ones fail
`session_lost`), at once and by the sweep; on a real Redis with a real Celery worker dispatching
and a separate claimer process sending for the new sender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.celery_worker import CeleryWorker
from tests.support.lua_alone import lua_delete_session, lua_transition
from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from tests.support.waiting import wait_for
from waorch.core import keys
from waorch.fleet import lifecycle, worker_events
from waorch.messages import records as messages
from waorch.policy.pacing import pace_for
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox, rerouting

ROOT = Path(__file__).resolve().parents[3]
TENANT = "acme"
A_PHONE, B_PHONE = "12025550301", "12025550302"
POLICY = {**FAST_POLICY,
          "trust_levels": {**FAST_POLICY["trust_levels"],
                           # 30 s between sends: a 600 s horizon plans ~20, the rest stays queued
                           "slow": {"per_minute": 2, "per_day": 1000},
                           "fast": {"per_minute": 600, "per_day": 1000}},
          "bursts": {"demand_factor": 1000}}


@pytest.fixture(autouse=True)
def policy_file(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, POLICY)


@pytest.fixture
def dispatcher(r, redis_url, tmp_path, policy_file):
    env = {"REDIS_URL": redis_url, "WAORCH_POLICY_FILE": str(policy_file)}
    with CeleryWorker(tmp_path, queues="dispatch", concurrency=2, env=env) as worker:
        yield worker


@pytest.fixture
def claimer(r, redis_url):
    """Start a claimer process that claims and ACKs for the given sessions (B's worker stand-in)."""
    started: list[subprocess.Popen] = []

    def start(*session_ids: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.pacing_claimer",
                                 "--seconds", "300", *session_ids], cwd=ROOT,
                                env={**os.environ, "REDIS_URL": redis_url})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def status(r, msg_id: str) -> str:
    return r.hget(keys.message(msg_id), "status")


def routed_to_a(r, a: dict, n: int, start: int = 0, **fields) -> list[str]:
    """`n` messages to distinct recipients, dispatched while A is the tenant's only session."""
    ids = []
    for i in range(start, start + n):
        [msg] = accept(r, TENANT, f"1415555{i:04d}", 1, **fields)
        assert dispatching.dispatch_message(r, msg) == "routed"
        assert r.hget(keys.message(msg), "session") == a["id"]
        ids.append(msg)
    return ids


def reroute_entries(r, msg_id: str) -> list[dict]:
    return [h for h in messages.history(r, msg_id)
            if h["status"] == "queued" and "rerouted" in (h.get("detail") or "")]


def left_on(r, session: dict) -> tuple[int, int, int]:
    d = outbox.depth(r, session["id"], session["phone"])
    return d["queued"], d["scheduled"], d["leased"]


def claims(r) -> list[dict]:
    return [json.loads(raw) for raw in r.lrange("test:claims", 0, -1)]


def test_a_ban_moves_every_unsent_message_to_the_other_sender_exactly_once(r, dispatcher, claimer):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    plain = routed_to_a(r, a, 30)
    explicit = routed_to_a(r, a, 3, start=100, from_requested=A_PHONE)
    queued, scheduled, _ = left_on(r, a)
    assert queued > 0 and scheduled > 0, (queued, scheduled)  # both the FIFO and the outbox hold some
    # A's worker holds one under a short lease when the ban comes
    held = outbox.claim(r, a["id"], pace_for(a), lease_seconds=3)
    assert held.outcome == "claimed"
    leased = held.message["id"]
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    claimer(b["id"])  # B sends while A's messages are being moved to it

    worker_events.apply(r, a["id"], "ERROR", {"code": "BANNED"}, time.time())

    for msg_id in explicit:
        record = messages.get_message(r, msg_id)
        assert record["status"] == "failed" and record["reason"] == "session_lost", record
        assert f"session {a['id']} banned" in messages.history(r, msg_id)[-1]["detail"]
    moved = [m for m in plain if m not in (leased,) and m not in explicit]
    wait_for(lambda: all(status(r, m) == "sent" for m in moved), "A's messages sent by B", timeout=120)
    # the leased one stays with A's worker until its lease runs out; then the sweep moves it
    assert r.zscore(keys.session_leases(a["id"]), leased) is not None
    wait_for(lambda: rerouting.sweep(r) >= 0 and status(r, leased) == "sent",
             "the expired lease rerouted and sent by B", timeout=120, interval=0.5)

    sent = claims(r)
    assert sorted(c["msg"] for c in sent) == sorted(plain)  # each exactly once, none lost
    assert {c["session"] for c in sent} == {b["id"]}
    for msg_id in plain:
        assert r.hget(keys.message(msg_id), "session") == b["id"]
        entries = reroute_entries(r, msg_id)
        assert len(entries) == 1 and entries[0]["detail"] == f"rerouted: session {a['id']} banned"
    assert left_on(r, a) == (0, 0, 0)
    assert r.get(keys.sticky_sender(TENANT, "14155550000")) == b["id"]
    assert r.zcard(keys.MESSAGES_UNROUTED) == 0


def test_a_deleted_session_hands_its_messages_over(r, dispatcher, claimer):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    plain = routed_to_a(r, a, 25)
    explicit = routed_to_a(r, a, 2, start=100, from_requested=A_PHONE)
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    claimer(b["id"])

    assert lifecycle.delete_session(r, a["id"])

    wait_for(lambda: all(status(r, m) == "sent" for m in plain), "sent by B", timeout=120)
    assert sorted(c["msg"] for c in claims(r)) == sorted(plain)
    assert all(messages.get_message(r, m)["reason"] == "session_lost" for m in explicit)
    assert all(reroute_entries(r, m)[0]["detail"] == f"rerouted: session {a['id']} deleted" for m in plain)
    assert left_on(r, a) == (0, 0, 0)
    # kept a while for late routes of a dispatch that raced the deletion, then forgotten
    assert r.hexists(keys.SESSIONS_GONE, a["id"])
    rerouting.sweep(r, now=time.time() + rerouting.GONE_GRACE + 5)
    assert not r.hexists(keys.SESSIONS_GONE, a["id"])


def test_the_sweep_alone_moves_them_after_a_crash_between_the_change_and_the_reroute(r, dispatcher):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    plain = routed_to_a(r, a, 10)
    c = connected_session(r, TENANT, "12025550303", trust_level="slow")
    deleted = []
    for i in range(5):
        [msg] = accept(r, TENANT, f"1415556{i:04d}", 1)
        assert outbox.route(r, msg, c["id"], c["phone"])
        deleted.append(msg)
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    # what sessions.transition / delete_session do in Lua, without the Python that follows them
    lua_transition(r, a["id"], "banned", force=True, desired="stopped")
    lua_delete_session(r, c["id"])
    assert all(r.hget(keys.message(m), "session") == a["id"] for m in plain)  # nothing moved yet

    assert rerouting.sweep(r) == 15

    wait_for(lambda: all(r.hget(keys.message(m), "session") == b["id"] for m in plain + deleted),
             "the Celery worker routed them to B", timeout=120)
    assert all(status(r, m) in ("routed", "scheduled") for m in plain + deleted)
    assert left_on(r, a) == (0, 0, 0) and left_on(r, c) == (0, 0, 0)
    assert rerouting.sweep(r) == 0  # idempotent: nothing left to move


def test_rerouting_twice_moves_nothing_twice(r):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    ids = routed_to_a(r, a, 30)
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    lua_transition(r, a["id"], "banned", force=True)
    first = rerouting.reroute(r, a["id"], A_PHONE, "session x banned", dispatch=False)
    second = rerouting.reroute(r, a["id"], A_PHONE, "session x banned", dispatch=False)
    assert sorted(first.rerouted) == sorted(ids) and second.rerouted == [] and second.failed == []
    assert r.zcard(keys.MESSAGES_UNROUTED) == 30
    for msg_id in ids:  # a dispatch task delivered twice routes once
        assert dispatching.dispatch_message(r, msg_id) == "routed"
        assert dispatching.dispatch_message(r, msg_id) == "skip"
        assert len(reroute_entries(r, msg_id)) == 1
    queued, scheduled, leased = left_on(r, b)
    on_b = r.lrange(keys.session_queue(B_PHONE), 0, -1) + r.zrange(keys.session_outbox(b["id"]), 0, -1)
    assert sorted(on_b) == sorted(ids) and leased == 0


def test_a_stop_by_request_reroutes_and_a_lone_session_fails_no_session(r):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    ids = routed_to_a(r, a, 4)
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    lifecycle.stop_session(r, a["id"])  # the hook moved them back to routing at once
    assert all(status(r, m) == "queued" for m in ids)
    assert all(dispatching.dispatch_message(r, m) == "routed" for m in ids)
    assert all(r.hget(keys.message(m), "session") == b["id"] for m in ids)
    assert reroute_entries(r, ids[0])[0]["detail"] == f"rerouted: session {a['id']} stopped"
    # B is banned too: the tenant has nobody left, so they fail as any message would at dispatch
    worker_events.apply(r, b["id"], "ERROR", {"code": "BANNED"}, time.time())
    assert all(dispatching.dispatch_message(r, m) == "failed" for m in ids)
    assert {messages.get_message(r, m)["reason"] for m in ids} == {"no_session"}


def test_a_restriction_moves_messages_only_when_the_pause_is_long_and_someone_else_can_send(r):
    a = connected_session(r, TENANT, A_PHONE, trust_level="slow")
    ids = routed_to_a(r, a, 4)
    explicit = routed_to_a(r, a, 1, start=100, from_requested=A_PHONE)
    now = time.time()
    # alone: even a long pause leaves them waiting (there is nobody to move them to)
    worker_events.apply(r, a["id"], "RESTRICTED", {"until": now + 7200}, now)
    assert all(r.hget(keys.message(m), "session") == a["id"] for m in ids + explicit)
    b = connected_session(r, TENANT, B_PHONE, trust_level="fast")
    # a short pause: they wait for A
    worker_events.apply(r, a["id"], "RESTRICTED", {"until": now + 600}, now)
    assert rerouting.sweep(r) == 0
    assert all(status(r, m) in ("routed", "scheduled") for m in ids + explicit)
    # longer than WAORCH_REROUTE_AFTER_PAUSE (1 h): they move, but `from` A still waits for A
    worker_events.apply(r, a["id"], "RESTRICTED", {"until": now + 7200}, now)
    assert all(status(r, m) == "queued" for m in ids)
    assert all(dispatching.dispatch_message(r, m) == "routed" for m in ids)
    assert all(r.hget(keys.message(m), "session") == b["id"] for m in ids)
    assert "paused until" in reroute_entries(r, ids[0])[0]["detail"]
    [kept] = explicit
    assert status(r, kept) in ("routed", "scheduled") and r.hget(keys.message(kept), "session") == a["id"]
    # a new message to one of A's recipients goes to B, not to its sticky but long-paused sender
    r.set(keys.sticky_sender(TENANT, "14155550000"), a["id"])
    [fresh] = accept(r, TENANT, "14155550000", 1)
    assert dispatching.dispatch_message(r, fresh) == "routed"
    assert r.hget(keys.message(fresh), "session") == b["id"]
