"""Tenant isolation over real HTTP: a tenant never sees or touches another tenant's sessions,
messages, inbound messages, suppressions, webhooks or dead letters; admin keys see all."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from tests.support.api_client import ApiClient
from tests.support.lua_alone import lua_dead_letter_lane
from waorch.core import keys, settings, signing
from waorch.fleet import worker_events
from waorch.messages import records as messages
from waorch.sending import dispatch as dispatching
from waorch.sessions import registry as sessions
from waorch.tenants import apikeys

PHONES = {"acme": "+4915123450001", "globex": "+4915123450002"}
RECIPIENT = "+14155550123"


def dead_letter(r, sub_id: str, event_id: str) -> str:
    now = time.time()
    r.set(keys.client_event(event_id), json.dumps({"id": event_id}))
    r.rpush(keys.webhook_lane(sub_id, 0), f"{event_id} {now - 100}")
    lua_dead_letter_lane(r, sub_id, 0, now, window=10, attempts=1, error="HTTP 500",
                         id_prefix=f"dl_{event_id}_")
    return f"dl_{event_id}_0"


@pytest.fixture
def world(gateway, admin_client, r, monkeypatch):
    """Two tenants, each with a session, a message, an inbound reply, a webhook, a dead letter."""
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    assert admin_client.post("/api/proxies", json={"url": "socks5h://u:p@127.0.0.2:1080"}).status_code == 201
    found = {"admin": admin_client}
    for tenant, phone in PHONES.items():
        client = ApiClient(gateway.url, apikeys.create_key(r, tenant, "send,read"))
        created = admin_client.post("/api/sessions", json={"phone": phone, "tenant": tenant})
        assert created.status_code == 201, created.text
        session = sessions.get_session(r, created.json()["id"])
        worker_events.ingest(r, session, "INBOUND", {"from": "14155550123", "text": f"hi {tenant}",
                                                     "wa_id": f"IN-{tenant}"}, None)
        msg = client.send(RECIPIENT, f"from {tenant}")
        assert msg.status_code == 202
        hook = client.post("/api/webhooks", json={"url": f"http://127.0.0.1:9/{tenant}"})
        assert hook.status_code == 201
        found[tenant] = {"client": client, "session": session, "msg": msg.json()["id"],
                         "webhook": hook.json()["id"],
                         "dead": dead_letter(r, hook.json()["id"], f"evt_{tenant}")}
    return found


def test_listings_show_only_the_own_tenant(world):
    mine, theirs = world["globex"], world["acme"]
    c = mine["client"]
    assert [s["id"] for s in c.get("/api/sessions").json()["sessions"]] == [mine["session"]["id"]]
    assert [m["id"] for m in c.get("/api/messages").json()["items"]] == [mine["msg"]]
    assert c.get("/api/messages", params={"session": theirs["session"]["id"]}).json()["items"] == []
    assert [w["id"] for w in c.get("/api/webhooks").json()["webhooks"]] == [mine["webhook"]]
    assert [d["id"] for d in c.get("/api/webhooks/dead-letters").json()["items"]] == [mine["dead"]]
    text = json.dumps([c.get(p).json() for p in ("/api/sessions", "/api/messages", "/api/webhooks",
                                                  "/api/webhooks/dead-letters")])
    for secret in (theirs["session"]["id"], theirs["msg"], theirs["webhook"], theirs["dead"], "from acme"):
        assert secret not in text


def test_another_tenants_things_are_404_and_untouched(world, r):
    c, theirs = world["globex"]["client"], world["acme"]
    sid = theirs["session"]["id"]
    for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/qr", f"/api/sessions/{sid}/events",
                 f"/api/sessions/{sid}/inbound", f"/api/messages/{theirs['msg']}",
                 f"/api/webhooks/{theirs['webhook']}"):
        answer = c.get(path)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
    assert c.delete(f"/api/webhooks/{theirs['webhook']}").status_code == 404
    assert c.post(f"/api/webhooks/dead-letters/{theirs['dead']}/redeliver").status_code == 404
    # operator acts need admin: refused before anything is looked up
    assert c.post(f"/api/sessions/{sid}/restart").status_code == 403
    assert c.delete(f"/api/sessions/{sid}").status_code == 403
    assert c.get("/api/proxies").status_code == 403
    # nothing of theirs changed
    assert r.exists(keys.client_webhook(theirs["webhook"])) and r.exists(keys.dead_letter(theirs["dead"]))
    assert sessions.get_session(r, sid)["status"] == "starting"
    assert world["acme"]["client"].get(f"/api/webhooks/{theirs['webhook']}").status_code == 200


def test_a_tenant_cannot_send_through_another_tenants_session(world, r):
    c, theirs = world["globex"]["client"], world["acme"]
    answer = c.send(RECIPIENT, "via your number?", **{"from": PHONES["acme"]})
    assert answer.status_code == 202
    msg_id = answer.json()["id"]
    assert dispatching.dispatch_message(r, msg_id) == "failed"
    view = messages.get_message(r, msg_id)
    assert view["status"] == "failed" and view["reason"] == "no_session" and view["session"] is None
    assert r.llen(keys.session_queue(theirs["session"]["phone"])) == 0


def test_a_worker_secret_only_works_for_its_own_session(world, gateway):
    mine, theirs = world["globex"]["session"], world["acme"]["session"]
    body = json.dumps({"session_id": mine["id"], "nonce": secrets.token_hex(8), "wait": 0}).encode()
    signed = signing.sign_headers(sessions.session_secret(mine), body)
    headers = {"Content-Type": "application/json", **signed}
    answer = requests.post(f"{gateway.url}/api/worker/sessions/{theirs['id']}/outbox/claim", data=body,
                           headers=headers, timeout=30)
    assert answer.status_code == 401


def test_suppressions_are_per_tenant(world, gateway):
    c, acme = world["globex"]["client"], world["acme"]["client"]
    paths = acme.get("/api/openapi.json").json()["paths"]
    if "/api/suppressions" not in paths:
        pytest.skip("no suppressions endpoint in this build")
    assert acme.post("/api/suppressions", json={"phone": RECIPIENT, "reason": "asked"}).status_code == 201
    assert [s["phone"] for s in acme.get("/api/suppressions").json()["items"]] == ["14155550123"]
    assert c.get("/api/suppressions").json()["items"] == []
    assert c.get(f"/api/suppressions/{RECIPIENT}").status_code == 404
    assert c.get("/api/suppressions", params={"tenant": "acme"}).status_code == 403
    assert c.delete(f"/api/suppressions/{RECIPIENT}").status_code == 403
    assert acme.get(f"/api/suppressions/{RECIPIENT}").status_code == 200


def test_admin_keys_see_every_tenant(world):
    admin = world["admin"]
    both = {world[t]["session"]["id"] for t in PHONES}
    assert {s["id"] for s in admin.get("/api/sessions").json()["sessions"]} == both
    assert {m["id"] for m in admin.get("/api/messages").json()["items"]} == {world[t]["msg"] for t in PHONES}
    assert {w["id"] for w in admin.get("/api/webhooks").json()["webhooks"]} == \
        {world[t]["webhook"] for t in PHONES}
    assert {d["id"] for d in admin.get("/api/webhooks/dead-letters").json()["items"]} == \
        {world[t]["dead"] for t in PHONES}
    for tenant in PHONES:
        things = world[tenant]
        sid = things["session"]["id"]
        assert admin.get(f"/api/sessions/{sid}/inbound").json()["items"][0]["text"] == f"hi {tenant}"
        assert admin.get(f"/api/messages/{things['msg']}").status_code == 200
        assert admin.get(f"/api/webhooks/{things['webhook']}").status_code == 200
    assert admin.post(f"/api/webhooks/dead-letters/{world['globex']['dead']}/redeliver").status_code == 202
