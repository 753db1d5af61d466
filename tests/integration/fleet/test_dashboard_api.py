"""The dashboard over real HTTP: its admin overview endpoint and the static page the gateway serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from waorch.fleet import overview as fleet_overview
from waorch.fleet import worker_events
from waorch.sending import outbox

SECRET = "dash-pr0xy-s3cret"
STATIC = Path(__file__).resolve().parents[3] / "app" / "dashboard" / "static"


@pytest.fixture
def session_id(admin_client, r) -> str:
    added = admin_client.post("/api/proxies", json={"url": f"socks5h://user:{SECRET}@127.0.0.2:1080"})
    assert added.status_code == 201, added.text
    created = admin_client.post("/api/sessions", json={"phone": "+4915123456789", "label": "dash"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    worker_events.apply(r, sid, "CONNECTED", {"jid": "4915123456789@s.whatsapp.net"}, 0.0)
    return sid


def test_overview_needs_an_admin_key(admin_client, api_client):
    assert admin_client.get("/api/dashboard/overview", key=None).status_code == 401
    wrong = admin_client.get("/api/dashboard/overview", key="not-a-key")
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    refused = api_client.get("/api/dashboard/overview")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


def test_overview_of_an_empty_fleet(admin_client):
    body = admin_client.get("/api/dashboard/overview").json()
    assert body["sessions"] == [] and body["recent_messages"] == [] and body["recent_failures"] == []
    assert body["queues"]["unrouted"] == 0 and body["queues"]["dead_letters"] == 0
    assert set(body["queues"]["celery"]) == {"dispatch", "orchestrator", "events", "maintenance"}
    assert body["now"] > 1.7e9


def test_overview_counts_queues_and_lists_recent_messages_and_failures(admin_client, session_id, r):
    ids = [admin_client.send("+14155550123", f"hello {i}").json()["id"] for i in range(4)]
    long_text = "x" * 300
    ids.append(admin_client.send("+14155550124", long_text).json()["id"])
    phone = "4915123456789"
    assert outbox.route(r, ids[0], session_id, phone) and outbox.route(r, ids[1], session_id, phone)
    assert outbox.fail(r, ids[2], "invalid_recipient", "not on WhatsApp")

    answer = admin_client.get("/api/dashboard/overview")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    load = {s["id"]: s for s in body["sessions"]}[session_id]
    assert load["routed"] == 2 and load["scheduled"] == 0 and load["claimed"] == 0
    assert load["queue_depth"] == 2 and load["sends_24h"] == 0
    queues = body["queues"]
    assert queues["routed"] == 2 and queues["unrouted"] == 2  # ids[3] and the long one
    recent = body["recent_messages"]
    assert [m["id"] for m in recent] == list(reversed(ids))  # newest first
    assert recent[0]["text_preview"] == "x" * (fleet_overview._PREVIEW - 1) + "…"
    assert "text" not in recent[0] and "history" not in recent[0]
    assert {m["id"]: m["status"] for m in recent}[ids[0]] == "routed"
    failures = body["recent_failures"]
    assert [(m["id"], m["reason"]) for m in failures] == [(ids[2], "invalid_recipient")]
    assert SECRET not in answer.text and admin_client.api_key not in answer.text


def test_overview_caps_the_recent_lists(admin_client, session_id, r):
    ids = [admin_client.send("+14155550123", f"m {i}").json()["id"]
           for i in range(fleet_overview.RECENT_SHOWN + 3)]
    for msg_id in ids:
        outbox.fail(r, msg_id, "expired")
    body = admin_client.get("/api/dashboard/overview").json()
    assert len(body["recent_messages"]) == fleet_overview.RECENT_SHOWN
    assert [m["id"] for m in body["recent_failures"]] == list(reversed(ids))


def test_openapi_documents_the_overview_but_not_the_page(admin_client):
    paths = admin_client.get("/api/openapi.json").json()["paths"]
    assert "/api/dashboard/overview" in paths
    assert not any(p.startswith("/dashboard") for p in paths)


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/"])
def test_the_page_is_served_without_a_key_and_without_inline_code(admin_client, path):
    page = admin_client.get(path, key=None)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert 'src="/dashboard/dashboard.js"' in page.text and "<script>" not in page.text


def test_assets_are_served_and_nothing_else(admin_client):
    js = admin_client.get("/dashboard/dashboard.js", key=None)
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    css = admin_client.get("/dashboard/dashboard.css", key=None)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    for path in ("/dashboard/nope.js", "/dashboard/__init__.py", "/dashboard/..%2F__init__.py"):
        missing = admin_client.get(path, key=None)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_script_puts_data_in_the_page_as_text_only():
    # API answers (labels, message texts, errors) must never be parsed as HTML
    script = (STATIC / "dashboard.js").read_text()
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
