"""Property test of the signed worker endpoints: a genuine worker (valid signature) sending any
JSON for any event, claim or ACK/NACK never makes the gateway answer 500."""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waorch.core import signing
from waorch.fleet import lifecycle
from waorch.proxies.pool import ProxyPool
from waorch.sessions import registry as sessions

EVENTS = ["QR", "PAIR_CODE", "CONNECTED", "PING", "ERROR", "MESSAGE_STATUS", "INBOUND", "RESTRICTED",
          "STOPPING", "UNKNOWN"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                       max_size=3),
    max_leaves=10)
receipts = st.fixed_dictionaries({"wa_id": st.text(min_size=1, max_size=4),
                                  "status": st.sampled_from(["delivered", "read"])},
                                 optional={"at": json_values | st.just(float("inf"))})
data_for_events = receipts | st.dictionaries(
    st.sampled_from(["at", "wa_id", "status", "from", "text", "media", "until", "reason", "code",
                     "detail", "connected", "sent", "failed", "claimed", "uptime", "pid", "jid", "qr"]),
    json_values | st.sampled_from(["delivered", "read", "BANNED", "PROXY_FAILED", "LOGGED_OUT"]),
    max_size=6)


@pytest.fixture
def worker(gateway, r):
    ProxyPool(r).add("socks5h://u:p@127.0.0.2:1080")
    session = lifecycle.create_session(r, "acme", "491510000042")
    secret = sessions.session_secret(session)

    def post(path: str, payload: dict) -> requests.Response:
        body = json.dumps({"session_id": session["id"], "nonce": secrets.token_hex(8), **payload}).encode()
        headers = {"Content-Type": "application/json", **signing.sign_headers(secret, body)}
        return requests.post(gateway.url + path, data=body, headers=headers, timeout=30)

    return session["id"], post


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(event=st.sampled_from(EVENTS), data=data_for_events | json_values, at=json_values)
def test_any_event_payload_is_handled(worker, event, data, at):
    _, post = worker
    answer = post("/api/webhook", {"event": event, "data": data, "at": at})
    assert answer.status_code in (204, 422), answer.text


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(payload=st.dictionaries(st.sampled_from(["wait", "lease_token", "wa_id", "sent_at", "reason",
                                                "retryable", "detail"]), json_values, max_size=5),
       action=st.sampled_from(["claim", "m1/ack", "m1/nack"]))
def test_any_outbox_payload_is_handled(worker, payload, action):
    session_id, post = worker
    payload = {**payload, "wait": 0} if action == "claim" else payload
    answer = post(f"/api/worker/sessions/{session_id}/outbox/{action}", payload)
    assert answer.status_code in (200, 204, 404, 422), answer.text


@pytest.mark.parametrize("event,data", [
    ("MESSAGE_STATUS", {"wa_id": "W1", "status": "read", "at": "yesterday"}),
    ("MESSAGE_STATUS", {"wa_id": ["W1"], "status": "delivered", "at": {"x": 1}}),
    ("INBOUND", {"from": {"a": 1}, "text": ["x"], "wa_id": 5, "at": "now", "media": "x"}),
    ("RESTRICTED", {"until": "tomorrow", "reason": {"x": 1}}),
    ("PING", {"connected": "yes", "sent": 1e300, "pid": -1}),
    ("ERROR", {"code": ["BANNED"], "detail": None}),
])
def test_odd_event_data_is_handled(worker, event, data, gateway, api_key):
    session_id, post = worker
    answer = post("/api/webhook", {"event": event, "data": data, "at": None})
    assert answer.status_code in (204, 422), answer.text
    listing = requests.get(f"{gateway.url}/api/sessions/{session_id}/inbound",
                           headers={"X-API-Key": api_key}, timeout=30)
    assert listing.status_code == 200, listing.text
    for item in listing.json()["items"]:
        assert item["at"] is None or isinstance(item["at"], float)
        assert isinstance(item["text"], str) and (item["media"] is None or isinstance(item["media"], dict))
