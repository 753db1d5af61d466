"""Schema-driven test of the whole public API: schemathesis generates requests for every
operation of the live gateway's /api/openapi.json (valid and invalid ones, with an admin key) and
no answer may be a 500; every JSON error answer has the error shape. Bounded per operation.

Random strings are rarely a valid phone number or an existing id, so some cases are seeded with
real ids (a session, message, proxy, webhook, dead letter that exist) and valid values, to reach
past validation into the code behind it. (schemathesis' pytest plugin does not run on pytest 9,
so each operation's strategy is driven with hypothesis here.)
"""

from __future__ import annotations

import json
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.support.lua_alone import lua_dead_letter_lane
from waorch.core import keys
from waorch.core import settings as waorch_settings
from waorch.fleet import lifecycle, worker_events
from waorch.proxies.pool import ProxyPool
from waorch.sending import accept
from waorch.tenants import apikeys

MAX_EXAMPLES = 15  # per operation: ~40 operations stay well under two minutes on a loaded machine
METHODS = ("get", "put", "post", "delete", "patch")
VALID = {"to": "+14155550123", "from": "+4915123456789", "phone": "+4915123456780",
         "url": "http://127.0.0.1:9/hook", "secret": "a-valid-webhook-secret", "text": "hello",
         "media": None}
PROXY = "socks5h://u:p@127.0.0.2:1080"


def operation_labels() -> list[str]:
    """Every operation of the gateway's spec, as `METHOD /path` (collected without Redis)."""
    from app import create_app  # noqa: PLC0415

    spec = create_app().test_client().get("/api/openapi.json").get_json()
    return [f"{m.upper()} {path}" for path, ops in spec["paths"].items() for m in ops if m in METHODS]


def existing_things(r) -> dict[str, str]:
    """Real ids for path parameters: one of each kind of thing, all of tenant acme."""
    ProxyPool(r).add(PROXY)
    session = lifecycle.create_session(r, "acme", "4915123456789")
    worker_events.ingest(r, session, "INBOUND", {"from": "14155550123", "text": "hi", "wa_id": "W1"}, None)
    msg_id = accept.new_message_id()
    accept.store(r, "acme", [{"id": msg_id, "to": "14155550123", "text": "x"}], {"id": msg_id})
    from waorch.webhooks import subscriptions as client_webhooks  # noqa: PLC0415

    hook = client_webhooks.create(r, "acme", VALID["url"], None, VALID["secret"])[0]["id"]
    now = time.time()
    r.set(keys.client_event("evt_1"), json.dumps({"id": "evt_1"}))
    r.rpush(keys.webhook_lane(hook, 0), f"evt_1 {now - 100}")
    lua_dead_letter_lane(r, hook, 0, now, window=10, attempts=1, error="x", id_prefix="dl_s_")
    from waorch.proxies.pool import proxy_id  # noqa: PLC0415

    return {"session_id": session["id"], "msg_id": msg_id, "webhook_id": hook, "dl_id": "dl_s_0",
            "proxy_id": proxy_id(PROXY), "phone": "+14155550123"}


def seeded(case, things: dict[str, str]):
    """The case with real ids in its path and valid values for well-known body fields."""
    for name in list(case.path_parameters or {}):
        if name in things:
            case.path_parameters[name] = things[name]
    if isinstance(case.body, dict):
        if "to" in case.body:  # a message: content and an expiry that let it through
            case.body.update(text="hello", expires_at=None)
        for name, value in VALID.items():
            if name in case.body:
                case.body[name] = PROXY if (name == "url" and "proxies" in case.path) else value
    return case


@pytest.fixture
def live(redis_url, monkeypatch, request):
    # proxy checks really connect: keep a generated proxy's check short
    monkeypatch.setenv("WAORCH_PROXY_CHECK_TIMEOUT", "1")
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    waorch_settings.get.cache_clear()
    gateway = request.getfixturevalue("gateway")
    schema = schemathesis.openapi.from_url(f"{gateway.url}/api/openapi.json", timeout=30)
    return gateway, schema


@pytest.mark.parametrize("label", operation_labels())
def test_no_input_yields_a_500(live, r, label):
    gateway, schema = live
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    things = existing_things(r)
    headers = {"X-API-Key": apikeys.create_key(r, "acme", "send,read,admin")}
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    cases = st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE),
                      positive.map(lambda case: seeded(case, things)))
    seen: list[int] = []

    @given(case=cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call(base_url=gateway.url, headers=headers, timeout=30)
        seen.append(response.status_code)
        assert response.status_code != 500, (
            f"{label} -> 500: {response.text[:300]}\n{case.as_curl_command()}")
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        if response.status_code >= 400 and is_json:
            body = response.json()
            assert isinstance(body, dict) and {"code", "message"} <= set(body), response.text[:300]

    call()
    assert seen  # the operation really was exercised
