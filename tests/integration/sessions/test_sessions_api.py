"""Sessions and proxies over real HTTP: validation, tenancy, redaction, QR as PNG and JSON."""

from __future__ import annotations

import json

import pytest

from tests.support.api_client import ApiClient
from waorch.core import keys
from waorch.fleet import worker_events
from waorch.tenants import apikeys

SECRET = "pr0xy-s3cret"


@pytest.fixture
def with_proxy(admin_client):
    answer = admin_client.post("/api/proxies", json={"url": f"socks5h://user:{SECRET}@127.0.0.2:1080"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_proxy_add_list_show_delete(admin_client, with_proxy):
    assert with_proxy["url"] == "socks5h://***:***@127.0.0.2:1080" and with_proxy["status"] == "OK"
    again = admin_client.post("/api/proxies", json={"url": f"socks5h://user:{SECRET}@127.0.0.2:1080"})
    assert again.status_code == 200 and again.json()["id"] == with_proxy["id"]
    listing = admin_client.get("/api/proxies")
    assert listing.status_code == 200 and listing.json()["count"] == 1
    assert SECRET not in listing.text and "user" not in listing.text
    assert admin_client.get(f"/api/proxies/{with_proxy['id']}").json()["sessions"] == 0
    assert admin_client.delete(f"/api/proxies/{with_proxy['id']}").status_code == 204
    assert admin_client.delete(f"/api/proxies/{with_proxy['id']}").status_code == 404
    assert admin_client.get("/api/proxies").json()["count"] == 0


@pytest.mark.parametrize("url", ["ftp://x:1", "socks5://host", "socks5://u@h:1", "", 42])
def test_bad_proxy_urls_are_422_with_field_errors(admin_client, url):
    answer = admin_client.post("/api/proxies", json={"url": url})
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "validation_error" and "url" in body["errors"]


def test_proxies_need_admin(api_client):
    assert api_client.get("/api/proxies").status_code == 403
    assert api_client.post("/api/proxies", json={"url": "socks5h://127.0.0.2:1"}).status_code == 403
    assert api_client.get("/api/proxies", key=None).status_code == 401


def test_session_create_without_proxies_is_a_clear_503(admin_client):
    answer = admin_client.post("/api/sessions", json={"phone": "+4915123456789"})
    assert answer.status_code == 503
    assert answer.json()["code"] == "no_proxy_capacity" and "no proxy capacity" in answer.json()["message"]


def test_session_lifecycle_over_http(admin_client, with_proxy, r):
    answer = admin_client.post("/api/sessions", json={"phone": "+49 151 23456789", "label": "shop"})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["phone"] == "4915123456789" and created["status"] == "starting"
    assert created["proxy"] == {"id": with_proxy["id"], "url": with_proxy["url"]}
    assert created["profile"]["device_name"] and SECRET not in answer.text and "salt" not in created
    duplicate = admin_client.post("/api/sessions", json={"phone": "+4915123456789"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "session_exists"
    sid = created["id"]
    assert admin_client.get(f"/api/sessions/{sid}").json()["id"] == sid
    assert [s["id"] for s in admin_client.get("/api/sessions").json()["sessions"]] == [sid]
    restarted = admin_client.post(f"/api/sessions/{sid}/restart")
    assert restarted.status_code == 202 and restarted.json()["restarts"] == 1
    assert admin_client.get(f"/api/sessions/{sid}/events").json()["events"][0]["event"] == "RESTART"
    assert admin_client.delete(f"/api/sessions/{sid}").status_code == 204
    assert admin_client.get(f"/api/sessions/{sid}").status_code == 404
    assert admin_client.delete(f"/api/sessions/{sid}").status_code == 404
    assert admin_client.get(f"/api/proxies/{with_proxy['id']}").json()["sessions"] == 0


@pytest.mark.parametrize(("body", "field"), [
    ({}, "phone"), ({"phone": "12"}, "phone"), ({"phone": "+4915123456789", "trust_level": "NOPE!"},
                                                "trust_level"),
    ({"phone": "+4915123456789", "label": "x" * 201}, "label"),
    ({"phone": "+4915123456789", "extra": 1}, "extra"),
])
def test_session_create_validation(admin_client, with_proxy, body, field):
    answer = admin_client.post("/api/sessions", json=body)
    assert answer.status_code == 422
    assert field in answer.json()["errors"]


def test_session_lifecycle_needs_admin_but_reading_needs_read(api_client, admin_client, with_proxy):
    assert api_client.post("/api/sessions", json={"phone": "+4915123456789"}).status_code == 403
    sid = admin_client.post("/api/sessions", json={"phone": "+4915123456789"}).json()["id"]
    assert api_client.get(f"/api/sessions/{sid}").status_code == 200  # same tenant (acme)
    assert api_client.post(f"/api/sessions/{sid}/restart").status_code == 403
    assert api_client.delete(f"/api/sessions/{sid}").status_code == 403


def test_other_tenants_cannot_see_a_session(gateway, admin_client, with_proxy, r):
    sid = admin_client.post("/api/sessions", json={"phone": "+4915123456789"}).json()["id"]
    stranger = ApiClient(gateway.url, apikeys.create_key(r, "other", "send,read"))
    assert stranger.get(f"/api/sessions/{sid}").status_code == 404
    assert stranger.get(f"/api/sessions/{sid}/qr").status_code == 404
    assert stranger.get("/api/sessions").json() == {"sessions": [], "count": 0}
    # an admin may create for another tenant, who then sees it
    made = admin_client.post("/api/sessions", json={"phone": "+4915123456780", "tenant": "other"}).json()
    assert [s["id"] for s in stranger.get("/api/sessions").json()["sessions"]] == [made["id"]]


def test_qr_as_png_and_json(admin_client, with_proxy, r):
    sid = admin_client.post("/api/sessions", json={"phone": "+4915123456789"}).json()["id"]
    assert admin_client.get(f"/api/sessions/{sid}/qr").status_code == 404
    worker_events.apply(r, sid, "QR", {"qr": "2@abcdef,ghijk,lmnop"}, 0.0)
    as_json = admin_client.get(f"/api/sessions/{sid}/qr")
    assert as_json.status_code == 200 and as_json.json()["qr"] == "2@abcdef,ghijk,lmnop"
    png = admin_client.get(f"/api/sessions/{sid}/qr", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 200
    assert admin_client.get(f"/api/sessions/{sid}").json()["status"] == "pairing"
    worker_events.apply(r, sid, "CONNECTED", {}, 0.0)
    assert admin_client.get(f"/api/sessions/{sid}/qr").status_code == 404


def test_session_detail_shows_counters_and_last_ping(admin_client, with_proxy, r):
    sid = admin_client.post("/api/sessions", json={"phone": "+4915123456789"}).json()["id"]
    worker_events.apply(r, sid, "PING", {"connected": True, "sent": 3}, 0.0)
    body = admin_client.get(f"/api/sessions/{sid}").json()
    assert body["status"] == "connected" and body["counters"]["sent"] == 3 and body["last_ping"]
    assert json.loads(r.lindex(keys.session_events(sid), 0))["event"] == "PING"
