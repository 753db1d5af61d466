"""GET /api/sessions/{id}/inbound over real HTTP: newest first, pages, validation, tenancy."""

from __future__ import annotations

import pytest

from tests.support.api_client import ApiClient
from waorch.fleet import lifecycle, worker_events
from waorch.proxies.pool import ProxyPool
from waorch.tenants import apikeys


@pytest.fixture
def session(r) -> dict:
    ProxyPool(r).add("socks5h://u:p@127.0.0.2:1080")
    created = lifecycle.create_session(r, "acme", "491510000009")
    for i in range(5):
        worker_events.ingest(r, created, "INBOUND", {"from": "14155550123", "text": f"m{i}",
                                                     "wa_id": f"W{i}", "at": 100 + i}, None)
    return created


def test_pages_newest_first(api_client: ApiClient, session):
    path = f"/api/sessions/{session['id']}/inbound"
    first = api_client.get(path, params={"limit": 2}).json()
    assert [i["text"] for i in first["items"]] == ["m4", "m3"] and first["next_offset"] == 2
    assert first["items"][0] == {"session": session["id"], "to": "491510000009", "from": "14155550123",
                                 "text": "m4", "wa_id": "W4", "at": 104, "media": None}
    rest = api_client.get(path, params={"limit": 2, "offset": 4}).json()
    assert [i["text"] for i in rest["items"]] == ["m0"] and rest["next_offset"] is None


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 500}, {"offset": -1}, {"offset": "x"}])
def test_bad_paging_is_422(api_client: ApiClient, session, query):
    answer = api_client.get(f"/api/sessions/{session['id']}/inbound", params=query)
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error"


def test_unknown_or_foreign_session_is_404(gateway, r, session):
    other = ApiClient(gateway.url, apikeys.create_key(r, "globex", "read"))
    assert other.get(f"/api/sessions/{session['id']}/inbound").status_code == 404
    assert other.get("/api/sessions/nope/inbound").status_code == 404
    assert ApiClient(gateway.url).get(f"/api/sessions/{session['id']}/inbound", key=None).status_code == 401
