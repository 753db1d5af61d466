"""POST /api/send, /api/send/batch and GET /api/messages over real HTTP on a real Redis."""

from __future__ import annotations

import pytest

from tests.support.api_client import ApiClient, ThreadedGateway
from waorch.core import keys, settings
from waorch.tenants import apikeys

TO = "+14155550123"


def dispatch_queue_length(r) -> int:
    return r.llen("dispatch")  # kombu's Redis list for the Celery `dispatch` queue


def test_send_accepts_and_records(api_client, r):
    res = api_client.send(TO, "hello", client_ref="crm-1")
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["status"] == "queued" and body["id"]
    assert dispatch_queue_length(r) == 1
    got = api_client.get(f"/api/messages/{body['id']}")
    assert got.status_code == 200
    msg = got.json()
    assert msg["to"] == "14155550123" and msg["client_ref"] == "crm-1"
    assert msg["history"][0]["status"] == "queued"


def test_bearer_auth_works(api_client):
    res = api_client.post("/api/send", key=None, json={"to": TO, "text": "x"},
                          headers={"Authorization": f"Bearer {api_client.api_key}"})
    assert res.status_code == 202


@pytest.mark.parametrize("headers,status", [({}, 401), ({"X-API-Key": "wao_nope"}, 401)])
def test_missing_or_bad_key(gateway, headers, status):
    res = ApiClient(gateway.url).post("/api/send", key=None, json={"to": TO, "text": "x"},
                                      headers=headers)
    assert res.status_code == status
    assert res.json()["code"] == "unauthorized"


def test_scope_is_enforced(gateway, r):
    reader = ApiClient(gateway.url, apikeys.create_key(r, "acme", "read"))
    res = reader.send(TO, "x")
    assert res.status_code == 403 and res.json()["code"] == "forbidden"


@pytest.mark.parametrize("payload,field", [
    ({"text": "no recipient"}, "to"),
    ({"to": "12", "text": "x"}, "to"),
    ({"to": "+1 415 555", "text": "x"}, "to"),
    ({"to": "not a phone", "text": "x"}, "to"),
    ({"to": TO}, "text"),
    ({"to": TO, "text": "   "}, "text"),
    ({"to": TO, "text": "x" * 4097}, "text"),
    ({"to": TO, "text": 5}, "text"),
    ({"to": TO, "text": "x", "surprise": 1}, "surprise"),
    ({"to": TO, "text": "x", "from": "abc"}, "from"),
    ({"to": TO, "media": {"url": "file:///etc/passwd"}}, "media"),
    ({"to": TO, "text": "x", "expires_at": "tomorrow"}, "expires_at"),
    ({"to": TO, "text": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"to": TO, "text": "x", "client_ref": "r" * 129}, "client_ref"),
    ({"to": [TO], "text": "x"}, "to"),
])
def test_validation_errors_name_the_field(api_client, r, payload, field):
    res = api_client.post("/api/send", json=payload)
    assert res.status_code == 422, res.text
    body = res.json()
    assert body["code"] == "validation_error"
    assert field in body["errors"], body
    assert dispatch_queue_length(r) == 0
    assert r.zcard(keys.MESSAGES_ALL) == 0


def test_not_json_is_415(api_client):
    res = api_client.post("/api/send", data="to=1&text=x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 415 and res.json()["code"] == "unsupported_media_type"


def test_malformed_json_is_4xx_json(api_client):
    res = api_client.post("/api/send", data="{not json", headers={"Content-Type": "application/json"})
    assert res.status_code in (400, 422)
    assert "code" in res.json()


def test_body_not_an_object(api_client):
    res = api_client.post("/api/send", json=["x"])
    assert res.status_code == 422


def test_too_large_is_413(api_client, monkeypatch):
    res = api_client.post("/api/send", data='{"to":"' + "1" * 3_000_000 + '"}',
                          headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and res.json()["code"] == "payload_too_large"


def test_idempotency_replay_and_conflict(api_client, r):
    headers = {"Idempotency-Key": "order-42"}
    first = api_client.post("/api/send", json={"to": TO, "text": "hi"}, headers=headers)
    again = api_client.post("/api/send", json={"text": "hi", "to": TO}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert dispatch_queue_length(r) == 1 and r.zcard(keys.MESSAGES_ALL) == 1
    other = api_client.post("/api/send", json={"to": TO, "text": "changed"}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    bad = api_client.post("/api/send", json={"to": TO, "text": "x"}, headers={"Idempotency-Key": "k" * 201})
    assert bad.status_code == 400


def test_rate_limit_answers_429_with_retry_after(redis_url, r, monkeypatch):
    monkeypatch.setenv("WAORCH_RATE_LIMIT", "1")
    monkeypatch.setenv("WAORCH_RATE_BURST", "3")
    settings.get.cache_clear()
    from app import create_app

    with ThreadedGateway(create_app()) as gw:
        client = ApiClient(gw.url, apikeys.create_key(r, "slow", "send"))
        codes = [client.send(TO, f"m{i}").status_code for i in range(5)]
        assert codes[:3] == [202, 202, 202]
        assert 429 in codes[3:]
        limited = client.send(TO, "again")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["code"] == "rate_limited"
        # another tenant has its own bucket
        other = ApiClient(gw.url, apikeys.create_key(r, "other", "send"))
        assert other.send(TO, "x").status_code == 202


def test_batch_accepts_valid_and_lists_rejected(api_client, r):
    res = api_client.post("/api/send/batch", json={"messages": [
        {"to": TO, "text": "a"}, {"to": "nope", "text": "b"}, {"to": TO, "text": "c"}, "junk"]})
    assert res.status_code == 202, res.text
    body = res.json()
    assert len(body["ids"]) == 2
    assert [rej["index"] for rej in body["rejected"]] == [1, 3]
    assert "to" in body["rejected"][0]["errors"]
    assert r.zcard(keys.MESSAGES_ALL) == 2


def test_batch_limits(api_client):
    assert api_client.post("/api/send/batch", json={"messages": []}).status_code == 422
    too_many = [{"to": TO, "text": "x"}] * 1001
    res = api_client.post("/api/send/batch", json={"messages": too_many})
    assert res.status_code == 422 and "messages" in res.json()["errors"]
    none_valid = api_client.post("/api/send/batch", json={"messages": [{"to": "x"}]})
    assert none_valid.status_code == 422


def test_messages_are_tenant_scoped(api_client, gateway, r):
    msg_id = api_client.send(TO, "mine").json()["id"]
    stranger = ApiClient(gateway.url, apikeys.create_key(r, "globex", "send,read"))
    assert stranger.get(f"/api/messages/{msg_id}").status_code == 404
    assert stranger.get("/api/messages").json()["items"] == []
    admin = ApiClient(gateway.url, apikeys.create_key(r, "ops", "admin"))
    assert admin.get(f"/api/messages/{msg_id}").status_code == 200


def test_message_listing_filters_and_pages(api_client):
    ids = [api_client.send(TO, f"m{i}").json()["id"] for i in range(5)]
    page = api_client.get("/api/messages", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api_client.get("/api/messages", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    seen = [m["id"] for m in page["items"] + rest["items"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert api_client.get("/api/messages", params={"status": "sent"}).json()["items"] == []
    assert api_client.get("/api/messages", params={"status": "bogus"}).status_code == 422
    assert api_client.get("/api/messages", params={"limit": 0}).status_code == 422
    assert api_client.get("/api/messages", params={"cursor": "abc"}).status_code == 422
    other = api_client.send("+14155550199", "to someone else").json()["id"]
    for spelled in (TO, TO[1:], "+1 (415) 555-0123"):
        mine = api_client.get("/api/messages", params={"to": spelled, "limit": 50}).json()["items"]
        assert sorted(m["id"] for m in mine) == sorted(ids), spelled
    theirs = api_client.get("/api/messages", params={"to": "+14155550199"}).json()["items"]
    assert [m["id"] for m in theirs] == [other]
    bad = api_client.get("/api/messages", params={"to": "12"})
    assert bad.status_code == 422 and "to" in bad.json()["errors"]
    assert api_client.get("/api/messages/does-not-exist").status_code == 404


def test_a_batch_pages_whole_although_it_shares_one_acceptance_time(api_client):
    # one accept script stamps a whole batch with the same time: pages must split that group
    batch = [{"to": f"+1415555{i:04d}", "text": f"b{i}"} for i in range(120)]
    ids = api_client.post("/api/send/batch", json={"messages": batch}).json()["ids"]
    assert len(ids) == 120
    seen, cursor = [], None
    for _ in range(5):
        page = api_client.get("/api/messages", params={"limit": 50} | ({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        seen += [m["id"] for m in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 120 and sorted(seen) == sorted(ids)


def test_redis_down_is_503_json(redis_server, monkeypatch, r):
    key = apikeys.create_key(r, "acme", "send,read")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings.get.cache_clear()
    from app import create_app
    from waorch.core import redis_client

    redis_client.reset_clients()
    with ThreadedGateway(create_app()) as gw:
        res = ApiClient(gw.url, key).send(TO, "x")
        assert res.status_code == 503
        assert res.json()["code"] == "unavailable" and res.headers["Retry-After"]


def test_openapi_and_docs(gateway):
    spec = ApiClient(gateway.url).get("/api/openapi.json", key=None)
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/send" in paths and "/api/messages/{msg_id}" in paths
    docs = ApiClient(gateway.url).get("/api/docs", key=None)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_replay_answers_the_first_answer_even_after_an_opt_out(api_client, r):
    from waorch.policy import suppressions

    headers = {"Idempotency-Key": "before-opt-out"}
    first = api_client.post("/api/send", json={"to": TO, "text": "hi"}, headers=headers)
    assert first.status_code == 202
    suppressions.add(r, "acme", "14155550123", reason="STOP")
    again = api_client.post("/api/send", json={"to": TO, "text": "hi"}, headers=headers)
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    fresh = api_client.post("/api/send", json={"to": TO, "text": "hi"})
    assert fresh.status_code == 422 and fresh.json()["code"] == "suppressed"
