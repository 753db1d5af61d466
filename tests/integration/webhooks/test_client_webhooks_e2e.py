"""Client webhooks end to end: the gateway over real HTTP, a real Celery worker, a real client
endpoint on 127.0.0.1. A message's whole life and an inbound reply arrive signed, de-duplicable
and in order; an endpoint that is down for a while gets everything once it is back; a slow
endpoint does not slow sending."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from tests.support.api_client import ApiClient
from tests.support.celery_worker import CeleryWorker
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver, free_port
from waorch.core import settings, signing
from waorch.sessions import registry as sessions

SECRET = "e2e-webhook-secret-0123"
TO = "+14155550123"


@pytest.fixture
def env(redis_url, monkeypatch, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"quiet_hours": None}))  # the test must not depend on the hour
    for name, value in {"WAORCH_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WAORCH_WEBHOOK_RETRY_BASE": "0.3",
                        "WAORCH_WEBHOOK_RETRY_MAX": "1", "WAORCH_WEBHOOK_TIMEOUT": "5",
                        "WAORCH_POLICY_FILE": str(policy), "WAORCH_RUNNER": "process"}.items():
        monkeypatch.setenv(name, value)
    settings.get.cache_clear()
    return tmp_path


@pytest.fixture
def admin(env, admin_client) -> ApiClient:
    proxy = admin_client.post("/api/proxies", json={"url": "socks5h://u:p@127.0.0.2:1080"})
    assert proxy.status_code == 201, proxy.text
    return admin_client


class SignedWorker:
    """Speaks for one session's worker: signed events, claims and ACKs through the gateway."""

    def __init__(self, base_url: str, session: dict) -> None:
        self.base_url = base_url
        self.session_id = session["id"]
        self.secret = sessions.session_secret(session)

    def post(self, path: str, **fields) -> requests.Response:
        body = json.dumps({"session_id": self.session_id, "nonce": secrets.token_hex(8), **fields}).encode()
        headers = {"Content-Type": "application/json", **signing.sign_headers(self.secret, body)}
        return requests.post(self.base_url + path, data=body, headers=headers, timeout=60)

    def event(self, name: str, **data) -> None:
        answer = self.post("/api/webhook", event=name, at=time.time(), data=data)
        assert answer.status_code == 204, answer.text

    def claim(self, wait: float = 20) -> dict:
        answer = self.post(f"/api/worker/sessions/{self.session_id}/outbox/claim", wait=wait)
        assert answer.status_code == 200, (answer.status_code, answer.text)
        return answer.json()

    def ack(self, message: dict, wa_id: str) -> None:
        answer = self.post(f"/api/worker/sessions/{self.session_id}/outbox/{message['id']}/ack",
                           lease_token=message["lease_token"], wa_id=wa_id, sent_at=time.time())
        assert answer.status_code == 204, answer.text


def connected_session(admin: ApiClient, r, phone: str) -> SignedWorker:
    created = admin.post("/api/sessions", json={"phone": phone})
    assert created.status_code == 201, created.text
    worker = SignedWorker(admin.base_url, sessions.get_session(r, created.json()["id"]))
    worker.event("CONNECTED", jid=f"{phone}@s.whatsapp.net")
    return worker


def subscribe(admin: ApiClient, url: str) -> str:
    answer = admin.post("/api/webhooks", json={"url": url, "secret": SECRET})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def send(admin: ApiClient, **extra) -> str:
    answer = admin.send(TO, "hello from the e2e test", client_ref="crm-42", **extra)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def whole_life(worker: SignedWorker, msg_id: str) -> None:
    message = worker.claim()
    assert message["id"] == msg_id
    worker.ack(message, "WA-E2E-1")
    worker.event("MESSAGE_STATUS", wa_id="WA-E2E-1", status="delivered", at=time.time())
    worker.event("MESSAGE_STATUS", wa_id="WA-E2E-1", status="read", at=time.time())
    worker.event("INBOUND", **{"from": "14155550123", "text": "thanks!", "wa_id": "IN-E2E-1",
                               "at": time.time(), "media": None})


def message_statuses(events: list[dict], msg_id: str) -> list[str]:
    return [e["data"]["status"] for e in events
            if e["type"] == "message.status" and e["data"]["message_id"] == msg_id]


def test_a_message_life_and_a_reply_arrive_signed_and_in_order(admin, r, env):
    with WebhookReceiver() as receiver, CeleryWorker(env):
        subscribe(admin, receiver.url)
        worker = connected_session(admin, r, "+4915123456701")
        msg_id = send(admin)
        whole_life(worker, msg_id)
        receiver.wait_for(lambda rc: len(message_statuses(rc.events(), msg_id)) == 3
                          and any(e["type"] == "message.inbound" for e in rc.events()), 90,
                          "sent, delivered, read and the inbound reply")
    events = receiver.events()
    assert message_statuses(events, msg_id) == ["sent", "delivered", "read"]
    sent = next(e for e in events if e["type"] == "message.status")
    assert sent["data"]["client_ref"] == "crm-42" and sent["data"]["to"] == "14155550123"
    assert sent["data"]["wa_id"] == "WA-E2E-1" and sent["data"]["session_id"] == worker.session_id
    inbound = next(e for e in events if e["type"] == "message.inbound")
    assert inbound["data"]["text"] == "thanks!" and inbound["data"]["from"] == "14155550123"
    assert inbound["data"]["session_id"] == worker.session_id
    status = [e for e in events if e["type"] == "session.status"]
    assert status and status[0]["data"]["status"] == "connected"
    for delivery in receiver.deliveries:
        assert delivery.verifies(SECRET)
        assert delivery.headers["X-Waorch-Event-Id"] == delivery.event["id"]
        assert set(delivery.event) == {"id", "type", "created_at", "data"}
    assert len({e["id"] for e in events}) == len(events)  # at-least-once, but nothing doubled here
    listed = admin.get(f"/api/sessions/{worker.session_id}/inbound").json()["items"]
    assert [i["text"] for i in listed] == ["thanks!"]


def delivery_of(admin: ApiClient, sub_id: str) -> dict:
    return admin.get(f"/api/webhooks/{sub_id}").json()["delivery"]


def test_an_endpoint_down_for_a_while_gets_everything_once_back(admin, r, env):
    receiver = WebhookReceiver(free_port())  # not started: connection refused
    with CeleryWorker(env):
        sub_id = subscribe(admin, receiver.url)
        worker = connected_session(admin, r, "+4915123456702")
        msg_id = send(admin)
        whole_life(worker, msg_id)
        # the deliveries really are failing and being retried meanwhile
        delivery = wait_for(lambda: (d := delivery_of(admin, sub_id))["last_error"]
                            and d["pending"] >= 5 and d, "failing deliveries being retried",
                            timeout=60, interval=0.3)
        assert "Connection" in delivery["last_error"] and delivery["delivered"] == 0
        with receiver:
            receiver.wait_for(lambda rc: len(message_statuses(rc.events(), msg_id)) == 3
                              and any(e["type"] == "message.inbound" for e in rc.events()), 90,
                              "everything after the endpoint came back")
            events = receiver.events()
            assert message_statuses(events, msg_id) == ["sent", "delivered", "read"]
            assert all(d.verifies(SECRET) for d in receiver.deliveries)
            wait_for(lambda: not delivery_of(admin, sub_id)["pending"], "nothing pending", timeout=30,
                     interval=0.3)
    final = delivery_of(admin, sub_id)
    assert final["last_error"] is None and final["delivered"] == len(receiver.deliveries) >= 5
    assert admin.get("/api/webhooks/dead-letters").json()["items"] == []


def test_a_slow_endpoint_does_not_slow_sending(admin, r, env, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_TIMEOUT", "30")
    settings.get.cache_clear()
    receiver = WebhookReceiver()
    receiver.delay = 40  # answers long after the delivery gave up
    with receiver, CeleryWorker(env):  # one worker on every queue, as `waorch worker` runs
        subscribe(admin, receiver.url)
        workers = [connected_session(admin, r, f"+49151234567{i:02d}") for i in (10, 11, 12)]
        receiver.wait_for(lambda rc: rc.attempts >= 1, 60, "a delivery stuck on the slow endpoint")
        started = time.monotonic()
        for worker in workers:
            before = time.monotonic()
            msg_id = send(admin, **{"from": f"+49151234567{workers.index(worker) + 10:02d}"})
            assert time.monotonic() - before < 3
            message = worker.claim(wait=25)  # dispatch and pacing still run while deliveries hang
            assert message["id"] == msg_id
            before = time.monotonic()
            worker.ack(message, f"WA-SLOW-{msg_id}")
            assert time.monotonic() - before < 3
            assert admin.get(f"/api/messages/{msg_id}").json()["status"] == "sent"
        # all three went out well inside one delivery timeout of the hanging endpoint
        assert time.monotonic() - started < 30
        assert receiver.deliveries == []
