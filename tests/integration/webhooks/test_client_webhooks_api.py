"""The webhooks API over real HTTP: subscribe, list, show, delete, URL rules, secrets, dead letters."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.api_client import ApiClient
from tests.support.lua_alone import lua_dead_letter_lane
from waorch.core import keys, settings
from waorch.tenants import apikeys
from waorch.webhooks import subscriptions as client_webhooks

SECRET = "my-webhook-secret-123"


@pytest.fixture
def allow_loopback(redis_url, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()


@pytest.fixture
def client(allow_loopback, api_client) -> ApiClient:
    return api_client


def test_subscribe_list_show_delete(client, r):
    created = client.post("/api/webhooks", json={"url": "http://127.0.0.1:8123/in", "secret": SECRET,
                                                 "events": ["message.status"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["url"] == "http://127.0.0.1:8123/in" and body["events"] == ["message.status"]
    assert body["tenant"] == "acme" and "secret" not in body  # the client chose it: never echoed
    assert body["delivery"] == {"pending": 0, "delivered": 0, "last_delivery_at": None,
                                "failing_since": None, "last_error": None, "next_attempt_at": None}
    listing = client.get("/api/webhooks")
    assert listing.status_code == 200 and listing.json()["count"] == 1
    shown = client.get(f"/api/webhooks/{body['id']}")
    assert shown.status_code == 200 and shown.json()["id"] == body["id"]
    for answer in (created, listing, shown):
        assert SECRET not in answer.text
    assert client.delete(f"/api/webhooks/{body['id']}").status_code == 204
    assert client.delete(f"/api/webhooks/{body['id']}").status_code == 404
    assert client.get(f"/api/webhooks/{body['id']}").status_code == 404
    assert not r.exists(keys.client_webhook(body["id"]))


def test_generated_secret_is_shown_once(client, r):
    created = client.post("/api/webhooks", json={"url": "http://127.0.0.1:8123/in"}).json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert created["events"] == list(client_webhooks.EVENT_TYPES)
    for path in ("/api/webhooks", f"/api/webhooks/{created['id']}"):
        assert secret not in client.get(path).text
    assert secret not in json.dumps(r.hgetall(keys.client_webhook(created["id"])))


@pytest.mark.parametrize("url,why", [
    ("http://127.0.0.2:8123/", "plain http"),
    ("https://127.0.0.2/", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://10.1.2.3/", "private"),
    ("https://[::1]/", "loopback"),
    ("https://2130706434/", "loopback"),  # 127.0.0.2 in decimal
    ("ftp://127.0.0.1/", "https"),
    ("https://user:pw@127.0.0.1/", "credentials"),
    ("https://nowhere.invalid/", "resolve"),
    ("", "give"),
])
def test_refused_urls_are_422_on_the_url_field(client, url, why):
    answer = client.post("/api/webhooks", json={"url": url, "secret": SECRET})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "validation_error" and why in " ".join(body["errors"]["url"])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8123/in", "https://127.0.0.1/", "https://localhost/",
                                 "https://2130706433/"])
def test_without_allowlist_loopback_is_refused(api_client, url):
    answer = api_client.post("/api/webhooks", json={"url": url})
    assert answer.status_code == 422 and "url" in answer.json()["errors"]


@pytest.mark.parametrize("payload,field", [
    ({"url": "http://127.0.0.1:1/", "secret": "short"}, "secret"),
    ({"url": "http://127.0.0.1:1/", "secret": "has spaces in it, sadly"}, "secret"),
    ({"url": "http://127.0.0.1:1/", "events": []}, "events"),
    ({"url": "http://127.0.0.1:1/", "events": ["message.deleted"]}, "events"),
    ({"url": "http://127.0.0.1:1/", "surprise": 1}, "surprise"),
    ({"secret": SECRET}, "url"),
    ({"url": ["http://127.0.0.1:1/"]}, "url"),
])
def test_validation_errors_name_the_field(client, payload, field):
    answer = client.post("/api/webhooks", json=payload)
    assert answer.status_code == 422 and field in answer.json()["errors"], answer.text


def test_the_number_of_webhooks_is_capped(client):
    for _ in range(client_webhooks.MAX_PER_TENANT):
        assert client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/"}).status_code == 201
    answer = client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/"})
    assert answer.status_code == 409 and answer.json()["code"] == "too_many_webhooks"


def test_keys_need_read_scope_and_only_admins_subscribe_for_others(gateway, r, allow_loopback):
    sender = ApiClient(gateway.url, apikeys.create_key(r, "acme", "send"))
    assert sender.get("/api/webhooks").status_code == 403
    assert ApiClient(gateway.url).get("/api/webhooks", key=None).status_code == 401
    reader = ApiClient(gateway.url, apikeys.create_key(r, "acme", "read"))
    other = reader.post("/api/webhooks", json={"url": "http://127.0.0.1:1/", "tenant": "globex"})
    assert other.status_code == 403
    admin = ApiClient(gateway.url, apikeys.create_key(r, "acme", "admin"))
    made = admin.post("/api/webhooks", json={"url": "http://127.0.0.1:1/", "tenant": "globex"})
    assert made.status_code == 201 and made.json()["tenant"] == "globex"


def dead_letter(r, sub_id: str, event_id: str = "evt_1", now: float | None = None) -> str:
    now = time.time() if now is None else now
    r.set(keys.client_event(event_id), json.dumps({"id": event_id, "type": "session.status",
                                                   "created_at": now, "data": {}}))
    r.rpush(keys.webhook_lane(sub_id, 0), f"{event_id} {now - 100}")
    prefix = f"dl_{event_id}_"
    lua_dead_letter_lane(r, sub_id, 0, now, window=10, attempts=4, error="HTTP 500", id_prefix=prefix)
    return prefix + "0"


def test_dead_letters_listed_paged_and_redelivered(client, r):
    sub = client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/"}).json()["id"]
    ids = [dead_letter(r, sub, f"evt_{i}") for i in range(3)]
    page = client.get("/api/webhooks/dead-letters", params={"limit": 2})
    assert page.status_code == 200, page.text
    body = page.json()
    assert len(body["items"]) == 2 and body["next_cursor"]
    rest = client.get("/api/webhooks/dead-letters", params={"limit": 2, "cursor": body["next_cursor"]}).json()
    listed = [i["id"] for i in body["items"] + rest["items"]]
    assert sorted(listed) == sorted(ids) and rest["next_cursor"] is None
    item = body["items"][0]
    assert item["webhook_id"] == sub and item["attempts"] == 4 and item["last_error"] == "HTTP 500"
    assert item["event"]["id"] == item["event_id"]
    again = client.post(f"/api/webhooks/dead-letters/{item['id']}/redeliver")
    assert again.status_code == 202 and again.json() == {"id": item["id"], "status": "queued"}
    assert client.post(f"/api/webhooks/dead-letters/{item['id']}/redeliver").status_code == 404
    assert r.lrange(keys.webhook_lane(sub, 0), 0, -1)[0].startswith(item["event_id"] + " ")
    assert len(client.get("/api/webhooks/dead-letters").json()["items"]) == 2
    webhook = client.get(f"/api/webhooks/{sub}").json()
    assert webhook["delivery"]["pending"] == 1


def test_redelivery_after_the_webhook_was_deleted_is_409(client, r):
    sub = client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/"}).json()["id"]
    dl = dead_letter(r, sub)
    assert client.delete(f"/api/webhooks/{sub}").status_code == 204
    answer = client.post(f"/api/webhooks/dead-letters/{dl}/redeliver")
    assert answer.status_code == 409 and answer.json()["code"] == "webhook_gone"


def test_dead_letters_of_one_moment_page_whole(client, r):
    # a disabled webhook's queued events become dead letters in one script, at one time
    sub = client.post("/api/webhooks", json={"url": "http://127.0.0.1:1/"}).json()["id"]
    now = time.time()
    ids = [dead_letter(r, sub, f"evt_{i}", now) for i in range(7)]
    listed, cursor = [], None
    for _ in range(5):
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/webhooks/dead-letters", params=params)
        assert page.status_code == 200, page.text
        listed += [i["id"] for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == sorted(ids) and len(listed) == 7


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"cursor": "abc"}, {"limit": "x"}])
def test_dead_letter_query_validation(client, query):
    assert client.get("/api/webhooks/dead-letters", params=query).status_code == 422


def test_a_webhook_whose_endpoint_answered_410_shows_disabled_and_can_be_enabled(client, r):
    from tests.support.webhook_receiver import WebhookReceiver
    from waorch.webhooks import delivery as webhook_delivery
    from waorch.webhooks import events as client_events

    with WebhookReceiver() as receiver:
        receiver.status = 410
        sub = client.post("/api/webhooks", json={"url": receiver.url, "secret": SECRET}).json()
        assert sub["status"] == "active" and sub["disabled_at"] is None
        client_events.emit(r, "acme", "s1", [client_events.new_event("evt_g1", "session.status", {})])
        assert webhook_delivery.deliver_lane(r, sub["id"], client_events.lane_for("s1")).outcome == "disabled"
    [listed] = client.get("/api/webhooks").json()["webhooks"]
    assert listed["status"] == "disabled" and listed["disabled_reason"] == "HTTP 410 Gone"
    assert listed["disabled_at"] and listed["delivery"]["pending"] == 0
    [letter] = client.get("/api/webhooks/dead-letters").json()["items"]
    answer = client.post(f"/api/webhooks/dead-letters/{letter['id']}/redeliver")
    assert answer.status_code == 409 and answer.json()["code"] == "webhook_disabled"
    other = ApiClient(client.base_url, apikeys.create_key(r, "globex", "read"))
    assert other.post(f"/api/webhooks/{sub['id']}/enable").status_code == 404
    enabled = client.post(f"/api/webhooks/{sub['id']}/enable")
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "active" and enabled.json()["disabled_reason"] is None
    assert client.get(f"/api/webhooks/{sub['id']}").json()["status"] == "active"
    assert client.post(f"/api/webhooks/dead-letters/{letter['id']}/redeliver").status_code == 202
    assert client.post("/api/webhooks/wh_nope/enable").status_code == 404


def test_update_url_events_and_secret(client, r):
    created = client.post("/api/webhooks", json={"url": "http://127.0.0.1:8123/in", "secret": SECRET}).json()
    path = f"/api/webhooks/{created['id']}"
    moved = client.patch(path, json={"url": "http://127.0.0.1:8124/new", "events": ["message.inbound"]})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["url"] == "http://127.0.0.1:8124/new" and body["events"] == ["message.inbound"]
    assert "secret" not in body and body["id"] == created["id"]
    r.hset(keys.client_webhook(created["id"]), "delivered", 7)  # as if 7 events had gone out
    assert client.patch(path, json={"events": ["message.inbound"]}).json()["delivery"]["delivered"] == 7

    def stored_secret() -> str | None:
        return client_webhooks.unseal(client_webhooks.get(r, created["id"])["secret"])

    assert stored_secret() == SECRET  # untouched
    chosen = client.patch(path, json={"secret": "a-brand-new-secret-42"})
    assert chosen.status_code == 200 and "a-brand-new-secret-42" not in chosen.text
    assert stored_secret() == "a-brand-new-secret-42"
    rotated = client.patch(path, json={"rotate_secret": True})
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and stored_secret() == new
    assert new not in client.get(path).text and new not in client.get("/api/webhooks").text


@pytest.mark.parametrize("body,field", [
    ({}, "_schema"), ({"url": "https://127.0.0.2/"}, "url"), ({"events": []}, "events"),
    ({"events": ["message.bogus"]}, "events"), ({"secret": "short"}, "secret"),
    ({"secret": "a-brand-new-secret-42", "rotate_secret": True}, "secret"), ({"colour": "red"}, "colour"),
])
def test_bad_updates_are_422_and_change_nothing(client, r, body, field):
    created = client.post("/api/webhooks", json={"url": "http://127.0.0.1:8123/in", "secret": SECRET}).json()
    before = r.hgetall(keys.client_webhook(created["id"]))
    answer = client.patch(f"/api/webhooks/{created['id']}", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["errors"], answer.json()
    assert r.hgetall(keys.client_webhook(created["id"])) == before


def test_another_tenants_webhook_cannot_be_updated(client, gateway, r):
    created = client.post("/api/webhooks", json={"url": "http://127.0.0.1:8123/in"}).json()
    stranger = ApiClient(gateway.url, apikeys.create_key(r, "globex", "read"))
    answer = stranger.patch(f"/api/webhooks/{created['id']}", json={"url": "http://127.0.0.1:9/steal"})
    assert answer.status_code == 404
    assert client_webhooks.get(r, created["id"])["url"] == "http://127.0.0.1:8123/in"
    assert client.patch("/api/webhooks/wh_nope", json={"rotate_secret": True}).status_code == 404
    admin = ApiClient(gateway.url, apikeys.create_key(r, "ops", "admin"))
    by_admin = admin.patch(f"/api/webhooks/{created['id']}", json={"events": ["session.status"]})
    assert by_admin.status_code == 200 and by_admin.json()["events"] == ["session.status"]


def test_an_update_racing_a_delete_never_leaves_half_a_webhook(client, r):
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(20):
        view, _ = client_webhooks.create(r, "acme", "http://127.0.0.1:8123/in", None, SECRET)
        with ThreadPoolExecutor(4) as pool:
            updates = [pool.submit(client_webhooks.update, r, view["id"], "acme", None, ["session.status"])
                       for _ in range(3)]
            pool.submit(client_webhooks.delete, r, view["id"], "acme").result()
            for done in updates:
                done.result()
        assert not r.exists(keys.client_webhook(view["id"]))
        assert client_webhooks.update(r, view["id"], "acme", events=["session.status"]) is None
