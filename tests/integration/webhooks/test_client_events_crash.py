"""Crash-safe client events on a real Redis: a change applied by Lua whose Python hook never ran
(the process died in between, or a script changed state by itself) is marked in the same script,
and the sweep emits it once, with the ids the hook would have given; hooks and sweeps racing still
queue each change exactly once."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from tests.support.lua_alone import (
    PACE,
    PHONE,
    SESSION,
    lua_ack,
    lua_delete_session,
    lua_fail,
    lua_ping,
    lua_receipt,
    lua_transition,
)
from waorch.core import keys, settings
from waorch.fleet import lifecycle, worker_events
from waorch.messages import records as messages
from waorch.policy import suppressions
from waorch.proxies.pool import ProxyPool
from waorch.sending import accept as acceptance
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"
TO = "14155550123"


@pytest.fixture
def sub(redis_url, r, monkeypatch) -> str:
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    return client_webhooks.create(r, TENANT, "http://127.0.0.1:9/h", None, "s" * 20)[0]["id"]


def queued(r, sub_id: str, key: str, prefix: str | None = None) -> list[dict]:
    """The events queued for `key` (a message or session id) on its lane, in order."""
    lane = keys.webhook_lane(sub_id, client_events.lane_for(key))
    found = [json.loads(r.get(keys.client_event(e.split(" ")[0]))) for e in r.lrange(lane, 0, -1)]
    return [e for e in found if e["id"].startswith(prefix or f"evt_{key}_")]


def pending(r) -> list[str]:
    return r.zrange(keys.CLIENT_EVENTS_PENDING, 0, -1)


def sweep(r) -> int:
    """The sweep as if its grace period had passed."""
    return client_events.sweep_pending(r, now=time.time() + settings.get().client_event_grace + 1)


def accept(r, tenant: str = TENANT, **fields) -> str:
    msg_id = acceptance.new_message_id()
    acceptance.store(r, tenant, [{"id": msg_id, "to": TO, "text": "hi", "client_ref": "crm-7", **fields}],
                    {"id": msg_id})
    return msg_id


def claimed(r, msg_id: str, now: float = 10) -> str:
    assert outbox.route(r, msg_id, SESSION, PHONE)
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=now)
    claim = outbox.claim(r, SESSION, PACE, now=now)
    assert claim.outcome == "claimed" and claim.message["id"] == msg_id, claim
    return claim.message["lease_token"]


def normalised(events: list[dict], msg_id: str) -> list[dict]:
    """Events without what legitimately differs between two messages (their ids, creation time)."""
    out = []
    for event in events:
        data = {k: v for k, v in event["data"].items() if k != "message_id"}
        out.append({"id": event["id"].replace(msg_id, "M"), "type": event["type"], "data": data})
    return out


def test_a_message_whose_hooks_never_ran_gets_the_events_the_hooks_would_give(r, sub):
    by_hooks, by_lua = accept(r), accept(r)
    token = claimed(r, by_hooks)
    outbox.ack(r, SESSION, by_hooks, token, "WA1", now=11)
    outbox.record_receipt(r, SESSION, "WA1", "read", at=13)
    assert pending(r) == []  # each hook cleared what its change marked

    token = claimed(r, by_lua, now=100)
    lua_ack(r, by_lua, token, "WA1", 11)
    lua_receipt(r, by_lua, "read", 13)  # implies delivered: two transitions in one script
    assert queued(r, sub, by_lua) == []  # the process "died": nothing emitted...
    assert pending(r) == [f"msg:{by_lua}"]  # ...but the change is marked
    assert client_events.sweep_pending(r) == 0  # within the grace period the hook may still come
    assert pending(r) == [f"msg:{by_lua}"]
    assert sweep(r) == 3
    assert pending(r) == []
    expected = normalised(queued(r, sub, by_hooks), by_hooks)
    assert [e["data"]["status"] for e in expected] == ["sent", "delivered", "read"]
    assert normalised(queued(r, sub, by_lua), by_lua) == expected
    assert sweep(r) == 0 and client_events.message_changed(r, by_lua) == 0  # nothing twice
    assert len(queued(r, sub, by_lua)) == 3


def test_a_late_hook_after_a_crash_emits_the_missed_change_too(r, sub):
    msg_id = accept(r)
    token = claimed(r, msg_id)
    lua_ack(r, msg_id, token, "WA2", 11)  # its hook never ran
    assert outbox.record_receipt(r, SESSION, "WA2", "delivered", at=12) == msg_id  # this one's did
    assert [e["data"]["status"] for e in queued(r, sub, msg_id)] == ["sent", "delivered"]
    assert pending(r) == [] and sweep(r) == 0
    ids = [e["id"] for e in queued(r, sub, msg_id)]
    history = messages.history(r, msg_id)
    assert ids == [f"evt_{msg_id}_{i}" for i, h in enumerate(history) if h["status"] in ("sent", "delivered")]


def test_failures_applied_by_lua_alone_are_swept(r, sub):
    unrouted = accept(r)
    lua_fail(r, unrouted, "no_session", "nobody to send it", 20)
    opted_out = accept(r)
    assert outbox.route(r, opted_out, SESSION, PHONE)
    suppressions.add(r, TENANT, TO, "STOP")
    # the slot planning script fails a message by itself when its recipient opted out
    scheduled, failed = outbox.reserve_in_redis(r, SESSION, PHONE, PACE, now=time.time())
    assert failed == [opted_out] and scheduled == 0
    assert sorted(pending(r)) == sorted(f"msg:{m}" for m in (unrouted, opted_out))
    assert sweep(r) == 2 and pending(r) == []
    for msg_id, reason in ((unrouted, "no_session"), (opted_out, "suppressed")):
        [event] = queued(r, sub, msg_id)
        assert event["data"]["status"] == "failed" and event["data"]["reason"] == reason


def test_an_expired_message_failed_in_claim_is_swept(r, sub):
    msg_id = accept(r, expires_at=f"{time.time() + 3600:.3f}")
    assert outbox.route(r, msg_id, SESSION, PHONE)
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=time.time())
    r.hset(keys.message(msg_id), "expires_at", f"{time.time() - 1:.3f}")  # it ran out while scheduled
    result = outbox.claim_in_redis(r, SESSION, PACE, time.time() + 3600, 60, "tok")
    assert msg_id in result[2:]
    assert sweep(r) == 1
    [event] = queued(r, sub, msg_id)
    assert event["data"]["reason"] == "expired" and event["id"] == f"evt_{msg_id}_3"


def test_tenants_without_webhooks_leave_no_marks(r, sub):
    msg_id = accept(r, tenant="other")
    lua_fail(r, msg_id, "no_session", "none", 20)
    assert pending(r) == []


def test_marks_of_what_is_gone_are_dropped(r, sub):
    r.zadd(keys.CLIENT_EVENTS_PENDING, {"msg:nope": 1, "session:nope": 1, "inbound:nope": 1, "what:ever": 1})
    assert client_events.sweep_pending(r) == 0
    assert pending(r) == []


def test_hooks_and_sweeps_racing_queue_each_transition_once(r, sub):
    # to 12 people: all are claimed before any ACK, which one person's messages would not be
    ids = [accept(r, to=f"14155551{n:03d}") for n in range(12)]
    tokens = {}
    for msg_id in ids:
        tokens[msg_id] = claimed(r, msg_id, now=10 + len(tokens) * 2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return run

    def writer():
        rng = random.Random(3)
        for n, msg_id in enumerate(ids):
            lua_ack(r, msg_id, tokens[msg_id], f"WA-R{n}", 100 + n)
            if rng.random() < 0.5:
                client_events.message_changed(r, msg_id)  # some hooks ran, some did not
            lua_receipt(r, msg_id, "delivered", 200 + n)
            lua_receipt(r, msg_id, "read", 300 + n)
            if rng.random() < 0.5:
                client_events.message_changed(r, msg_id)
        stop.set()

    def hooks():
        rng = random.Random()
        while not stop.is_set():
            client_events.message_changed(r, rng.choice(ids))

    def sweeper():
        while not stop.is_set():
            client_events.sweep_pending(r, grace=0)

    threads = [threading.Thread(target=guarded(f)) for f in (writer, hooks, hooks, sweeper, sweeper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    client_events.sweep_pending(r, grace=0)
    assert pending(r) == []
    for msg_id in ids:
        history = messages.history(r, msg_id)
        expected = [f"evt_{msg_id}_{i}" for i, h in enumerate(history)
                    if h["status"] in client_events.CLIENT_STATUSES]
        events = queued(r, sub, msg_id)
        assert [e["id"] for e in events] == expected
        assert [e["data"]["status"] for e in events] == ["sent", "delivered", "read"]


# --- sessions ----------------------------------------------------------------------------------

@pytest.fixture
def session(r, sub) -> dict:
    ProxyPool(r).add("socks5h://u:p@127.0.0.2:1080")
    return lifecycle.create_session(r, TENANT, "491510000001")


def lua_session(r, sid: str, status: str, fields: dict | None = None) -> None:
    """sessions/transition.lua as waorch.sessions.registry.transition runs it, minus the hook."""
    outcome, _old, new = lua_transition(r, sid, status, fields=fields)
    assert outcome == "ok" and new == status


def test_a_session_change_applied_by_lua_alone_is_swept(r, sub, session):
    sid = session["id"]
    lua_session(r, sid, "connected")
    lua_session(r, sid, "error", {"last_error": "PROXY_FAILED: refused"})
    pings = lua_ping(r, sid, True)
    assert pings[1:] == ["error", "connected"]
    assert queued(r, sub, sid) == [] and pending(r) == [f"session:{sid}"]
    assert sweep(r) == 3 and pending(r) == []
    events = queued(r, sub, sid)
    assert [e["id"] for e in events] == [f"evt_{sid}_s1", f"evt_{sid}_s2", f"evt_{sid}_s3"]
    assert [(e["data"]["previous"], e["data"]["status"]) for e in events] == [
        ("starting", "connected"), ("connected", "error"), ("error", "connected")]
    assert events[1]["data"]["detail"] == "PROXY_FAILED: refused"
    assert all(e["type"] == "session.status" and e["data"]["phone"] == "491510000001" for e in events)
    # the next change through the registry (with its hook) continues the same numbering
    worker_events.apply(r, sid, "ERROR", {"code": "BANNED"}, time.time())
    assert [e["id"] for e in queued(r, sub, sid)][-1] == f"evt_{sid}_s4"
    assert pending(r) == [] and sweep(r) == 0


def test_session_hooks_and_sweeps_racing_queue_each_change_once(r, sub, session):
    sid = session["id"]
    stop = threading.Event()
    statuses = ["connected", "disconnected"] * 15

    def writer():
        for status in statuses:
            sessions.transition(r, sid, status)
        stop.set()

    def sweeper():
        while not stop.is_set():
            client_events.sweep_pending(r, grace=0)

    threads = [threading.Thread(target=f) for f in (writer, sweeper, sweeper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    client_events.sweep_pending(r, grace=0)
    events = queued(r, sub, sid)
    assert [e["id"] for e in events] == [f"evt_{sid}_s{n}" for n in range(1, len(statuses) + 1)]
    assert [e["data"]["status"] for e in events] == statuses
    assert pending(r) == []


def test_a_deleted_session_leaves_no_mark(r, sub, session):
    sid = session["id"]
    lua_session(r, sid, "connected")
    assert pending(r) == [f"session:{sid}"]
    assert lua_delete_session(r, sid)[0] == "ok"
    assert pending(r) == [] and not r.exists(keys.session_status_log(sid))


# --- inbound -----------------------------------------------------------------------------------

def store_inbound(r, session: dict, wa_id: str, text: str) -> str | None:
    """What waorch.fleet.worker_events stores for an INBOUND event, without the hook after it."""
    entry = {"session": session["id"], "to": session["phone"], "from": TO, "text": text,
             "wa_id": wa_id, "at": 5.0, "media": None}
    pipe = r.pipeline(transaction=True)
    pipe.lpush(keys.session_inbound(session["id"]), json.dumps(entry))
    event_id = client_events.mark_inbound(pipe, session, entry)
    pipe.execute()
    return event_id


def test_an_inbound_message_whose_hook_never_ran_is_swept_once(r, sub, session):
    record = sessions.get_session(r, session["id"])
    event_id = store_inbound(r, record, "IN-C1", "are you there?")
    assert event_id == client_events.inbound_event_id(session["id"], {"wa_id": "IN-C1"})
    assert pending(r) == [f"inbound:{event_id}"]
    assert sweep(r) == 1 and pending(r) == []
    assert client_events.inbound_received(r, event_id) == 0  # the late hook: already emitted
    [event] = queued(r, sub, session["id"], prefix="evt_in_")
    assert event["id"] == event_id and event["data"]["text"] == "are you there?"
    assert not r.hlen(keys.CLIENT_EVENTS_INBOUND)


def test_inbound_hooks_and_sweeps_racing_emit_once(r, sub, session):
    record = sessions.get_session(r, session["id"])
    event_ids = [store_inbound(r, record, f"IN-R{n}", f"text {n}") for n in range(25)]
    threads = [threading.Thread(target=lambda: [client_events.inbound_received(r, e) for e in event_ids]),
               threading.Thread(target=lambda: client_events.sweep_pending(r, grace=0)),
               threading.Thread(target=lambda: client_events.sweep_pending(r, grace=0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = queued(r, sub, session["id"], prefix="evt_in_")
    assert sorted(e["id"] for e in events) == sorted(event_ids)
    assert pending(r) == []
