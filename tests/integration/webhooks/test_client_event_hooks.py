"""Where state changes are applied, client events are queued: message sent/delivered/read/failed,
inbound messages and session status changes (real Redis, the real outbox and registry code)."""

from __future__ import annotations

import json
import time

import pytest

from waorch.core import keys, settings
from waorch.fleet import lifecycle, worker_events
from waorch.policy.pacing import Pace
from waorch.proxies.pool import ProxyPool
from waorch.sending import accept as acceptance
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"
SESSION, PHONE = "s1", "14155550100"
PACE = Pace(per_minute=60, jitter=0.3)


@pytest.fixture
def sub(redis_url, r, monkeypatch) -> str:
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    return client_webhooks.create(r, TENANT, "http://127.0.0.1:9/h", None, "s" * 20)[0]["id"]


def queued(r, sub_id: str, key: str) -> list[dict]:
    """Events about `key` (a message or session) on its lane; other messages may share the lane."""
    lane = keys.webhook_lane(sub_id, client_events.lane_for(key))
    found = [json.loads(r.get(keys.client_event(entry.split(" ")[0]))) for entry in r.lrange(lane, 0, -1)]
    return [e for e in found if key in (e["data"].get("message_id"), e["data"].get("session_id"))]


def accept(r, tenant: str = TENANT) -> str:
    msg_id = acceptance.new_message_id()
    acceptance.store(r, tenant, [{"id": msg_id, "to": "14155550123", "text": "hi", "client_ref": "crm-7"}],
                    {"id": msg_id})
    return msg_id


def claimed(r, msg_id: str) -> str:
    assert outbox.route(r, msg_id, SESSION, PHONE)
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=10)
    return outbox.claim(r, SESSION, PACE, now=10).message["lease_token"]


def test_a_message_life_becomes_sent_delivered_read_events(r, sub):
    msg_id = accept(r)
    token = claimed(r, msg_id)
    assert queued(r, sub, msg_id) == []  # internal steps are not client events
    outbox.ack(r, SESSION, msg_id, token, "WA1", now=11)
    outbox.ack(r, SESSION, msg_id, token, "WA1", now=12)  # duplicate ACK: no second event
    outbox.record_receipt(r, SESSION, "WA1", "read", at=13)  # implies delivered
    events = queued(r, sub, msg_id)
    assert [e["data"]["status"] for e in events] == ["sent", "delivered", "read"]
    assert [e["type"] for e in events] == ["message.status"] * 3
    assert len({e["id"] for e in events}) == 3
    first = events[0]["data"]
    assert first["message_id"] == msg_id and first["client_ref"] == "crm-7" and first["wa_id"] == "WA1"
    assert first["session_id"] == SESSION and first["at"] == 11 and first["reason"] is None


def test_failures_carry_their_reason(r, sub):
    unrouted = accept(r)
    outbox.fail(r, unrouted, "no_session", "the tenant has no usable session")
    [event] = queued(r, sub, unrouted)
    assert event["data"]["status"] == "failed" and event["data"]["reason"] == "no_session"
    assert event["data"]["detail"] == "the tenant has no usable session"
    unsendable = accept(r)
    token = claimed(r, unsendable)
    outcome = outbox.nack(r, SESSION, unsendable, token, "INVALID_RECIPIENT", False, "not on WhatsApp")
    assert outcome == "failed"
    [event] = queued(r, sub, unsendable)
    assert event["data"]["reason"] == "send_error" and "not on WhatsApp" in event["data"]["detail"]


def test_retryable_nack_is_not_a_client_event(r, sub):
    msg_id = accept(r)
    token = claimed(r, msg_id)
    assert outbox.nack(r, SESSION, msg_id, token, "timeout", True) == "retry"
    assert queued(r, sub, msg_id) == []


def test_other_tenants_events_do_not_reach_this_subscription(r, sub):
    msg_id = accept(r, tenant="other")
    outbox.fail(r, msg_id, "no_session", "none")
    assert queued(r, sub, msg_id) == []
    assert r.hget(keys.message(msg_id), "client_seq")  # handled, just nobody subscribed


@pytest.fixture
def session(r, sub) -> dict:
    ProxyPool(r).add("socks5h://u:p@127.0.0.2:1080")
    return lifecycle.create_session(r, TENANT, "491510000001")


def test_session_status_changes_become_events(r, sub, session):
    sid = session["id"]
    now = time.time()
    worker_events.apply(r, sid, "QR", {"qr": "2@x"}, now)
    worker_events.apply(r, sid, "QR", {"qr": "2@y"}, now)  # no change: no event
    worker_events.apply(r, sid, "CONNECTED", {"jid": "x"}, now)
    worker_events.apply(r, sid, "PING", {"connected": False}, now)
    worker_events.apply(r, sid, "ERROR", {"code": "BANNED", "detail": "by WhatsApp"}, now)
    events = queued(r, sub, sid)
    assert [(e["data"]["previous"], e["data"]["status"]) for e in events][:2] == [
        ("starting", "pairing"), ("pairing", "connected")]
    assert events[-1]["data"]["status"] == "banned" and "BANNED" in events[-1]["data"]["detail"]
    assert all(e["type"] == "session.status" and e["data"]["phone"] == "491510000001" for e in events)
    assert "2@x" not in json.dumps(events)


def test_inbound_messages_become_events_with_a_stable_id(r, sub, session):
    record = sessions.get_session(r, session["id"])
    data = {"from": "14155550123", "text": "STOP please", "wa_id": "IN1", "at": 5.0}
    worker_events.ingest(r, record, "INBOUND", data, None)
    worker_events.ingest(r, record, "INBOUND", data, None)  # the worker reported it twice
    events = [e for e in queued(r, sub, session["id"]) if e["type"] == "message.inbound"]
    assert len(events) == 2 and events[0]["id"] == events[1]["id"]
    assert events[0]["data"] == {"session_id": session["id"], "to": "491510000001", "from": "14155550123",
                                 "text": "STOP please", "media": None, "wa_id": "IN1", "at": 5.0}


def test_emitting_never_breaks_the_state_change(r, sub):
    r.set(keys.tenant_webhooks(TENANT), "not a set")  # the emit script now fails
    msg_id = accept(r)
    assert outbox.fail(r, msg_id, "expired", "too late") is True
    assert r.hget(keys.message(msg_id), "status") == "failed"
