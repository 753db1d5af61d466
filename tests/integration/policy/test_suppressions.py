"""Opt-outs and the suppression list over real HTTP on a real Redis: an opt-out reply from a
worker's signed webhook stops every further send to that person; the suppressions API."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from tests.support.api_client import ApiClient
from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.core import signing
from waorch.messages import records as messages
from waorch.policy.pacing import pace_for
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.tenants import apikeys

PERSON = "14155550123"


@pytest.fixture(autouse=True)
def fast_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, FAST_POLICY)


def worker_event(gateway, session: dict, event: str, data: dict) -> requests.Response:
    """What the session's worker does: a signed POST /api/webhook."""
    body = json.dumps({"session_id": session["id"], "nonce": secrets.token_hex(8), "event": event,
                       "data": data}).encode()
    headers = {"Content-Type": "application/json",
               **signing.sign_headers(sessions.session_secret(session), body)}
    return requests.post(f"{gateway.url}/api/webhook", data=body, headers=headers, timeout=10)


def test_opt_out_reply_stops_further_sends(gateway, api_client, r):
    s = connected_session(r, "acme", "12025550131")
    # two messages to the person are already planned, one of them claimed by the worker
    ids = accept(r, "acme", PERSON, 3)
    for msg_id in ids:
        dispatching.dispatch_message(r, msg_id)
    first = outbox.claim(r, s["id"], pace_for(s))
    assert first.outcome == "claimed"

    res = worker_event(gateway, s, "INBOUND", {"from": PERSON, "text": "Stop!", "wa_id": "in-1"})
    assert res.status_code == 204, res.text
    listed = api_client.get("/api/suppressions").json()
    assert [i["phone"] for i in listed["items"]] == [PERSON] and listed["count"] == 1
    assert listed["items"][0]["source"] == f"inbound:{s['id']}"

    # the API says so at once, and enqueues nothing
    refused = api_client.send(f"+{PERSON}", "one more thing")
    assert refused.status_code == 422 and refused.json()["code"] == "suppressed"
    assert "to" in refused.json()["errors"]
    batch = api_client.post("/api/send/batch", json={"messages": [
        {"to": "+14155550124", "text": "fine"}, {"to": f"+{PERSON}", "text": "no"}]})
    assert batch.status_code == 202
    assert [rej["index"] for rej in batch.json()["rejected"]] == [1]

    # what was planned before the opt-out fails at its claim instead of being sent
    nothing = outbox.claim(r, s["id"], pace_for(s), now=time.time() + 30)  # all due, lease still held
    assert nothing.outcome != "claimed"
    for msg_id in ids[1:]:
        view = messages.get_message(r, msg_id)
        assert view["status"] == "failed" and view["reason"] == "suppressed"
    # the one already in the worker's hands is not taken back (it may be on the wire)
    assert messages.get_message(r, ids[0])["status"] == "claimed"
    # a message accepted earlier but dispatched only now fails at dispatch
    [late] = accept(r, "acme", PERSON, 1)
    assert dispatching.dispatch_message(r, late) == "failed"
    assert messages.get_message(r, late)["reason"] == "suppressed"


def test_ordinary_replies_do_not_suppress(gateway, api_client, r):
    s = connected_session(r, "acme", "12025550132")
    for text in ("thanks!", "can you stop by at 5?", "cancel my order 42"):
        assert worker_event(gateway, s, "INBOUND", {"from": PERSON, "text": text}).status_code == 204
    assert api_client.get("/api/suppressions").json()["count"] == 0
    assert api_client.send(f"+{PERSON}", "hello").status_code == 202


def test_opt_out_is_per_tenant(gateway, r):
    mine = connected_session(r, "acme", "12025550133")
    connected_session(r, "globex", "12025550134")
    worker_event(gateway, mine, "INBOUND", {"from": PERSON, "text": "UNSUBSCRIBE"})
    acme = ApiClient(gateway.url, apikeys.create_key(r, "acme", "send,read"))
    globex = ApiClient(gateway.url, apikeys.create_key(r, "globex", "send,read"))
    assert acme.send(f"+{PERSON}", "x").status_code == 422
    assert globex.send(f"+{PERSON}", "x").status_code == 202
    assert globex.get("/api/suppressions").json()["items"] == []


def test_suppressions_api(gateway, api_client, admin_client, r):
    made = api_client.post("/api/suppressions", json={"phone": "+1 415 555 0123", "reason": "asked by phone"})
    assert made.status_code == 201, made.text
    assert made.json()["phone"] == PERSON and made.json()["source"] == "api"
    again = api_client.post("/api/suppressions", json={"phone": f"+{PERSON}", "reason": "other"})
    assert again.status_code == 200 and again.json()["reason"] == "asked by phone"
    assert api_client.get(f"/api/suppressions/{PERSON}").status_code == 200
    assert api_client.get("/api/suppressions/14155550199").status_code == 404
    bad = api_client.post("/api/suppressions", json={"phone": "nope"})
    assert bad.status_code == 422 and "phone" in bad.json()["errors"]
    assert api_client.get("/api/suppressions", params={"limit": 0}).status_code == 422
    assert api_client.get("/api/suppressions", params={"cursor": "x"}).status_code == 422
    # lifting an opt-out is an operator's decision
    denied = api_client.delete(f"/api/suppressions/{PERSON}")
    assert denied.status_code == 403
    assert admin_client.delete(f"/api/suppressions/{PERSON}").status_code == 204
    assert admin_client.delete(f"/api/suppressions/{PERSON}").status_code == 404
    assert api_client.send(f"+{PERSON}", "welcome back").status_code == 202
    # another tenant's list: admin keys only
    other = ApiClient(gateway.url, apikeys.create_key(r, "globex", "send,read"))
    other.post("/api/suppressions", json={"phone": "+14155550177"})
    assert api_client.get("/api/suppressions", params={"tenant": "globex"}).status_code == 403
    seen = admin_client.get("/api/suppressions", params={"tenant": "globex"}).json()
    assert [i["phone"] for i in seen["items"]] == ["14155550177"]
    assert ApiClient(gateway.url).get("/api/suppressions", key=None).status_code == 401


def test_suppressions_page(gateway, api_client, r):
    for i in range(25):
        assert api_client.post("/api/suppressions", json={"phone": f"+1415555{1000 + i}"}).status_code == 201
    seen, cursor = [], None
    for _ in range(30):
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = api_client.get("/api/suppressions", params=params).json()
        seen += [i["phone"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(set(seen)) == sorted(f"1415555{1000 + i}" for i in range(25))
    assert r.hlen("suppressions:acme") == 25


def test_messages_failed_as_suppressed_are_client_events(r, monkeypatch):
    from waorch.core import keys, settings
    from waorch.policy import suppressions
    from waorch.webhooks import events as client_events
    from waorch.webhooks import subscriptions as client_webhooks

    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    sub = client_webhooks.create(r, "acme", "http://127.0.0.1:9/h", None, "s" * 20)[0]["id"]
    s = connected_session(r, "acme", "12025550135")
    planned, routed = accept(r, "acme", PERSON, 2)
    dispatching.dispatch_message(r, planned)  # scheduled: fails at its claim
    assert outbox.route(r, routed, s["id"], s["phone"])  # routed, no slot yet: fails at planning
    suppressions.add(r, "acme", PERSON, "opt-out reply", source="test")
    assert outbox.claim(r, s["id"], pace_for(s)).outcome == "empty"
    outbox.reserve_slots(r, s["id"], s["phone"], pace_for(s))
    for msg in (planned, routed):
        lane = keys.webhook_lane(sub, client_events.lane_for(msg))
        events = [json.loads(r.get(keys.client_event(e.split(" ")[0]))) for e in r.lrange(lane, 0, -1)]
        events = [e for e in events if e["data"].get("message_id") == msg]  # lanes are shared
        assert [(e["data"]["status"], e["data"]["reason"]) for e in events] == [("failed", "suppressed")]
