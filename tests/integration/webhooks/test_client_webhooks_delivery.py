"""Delivery runs against a real HTTP receiver on 127.0.0.1: signatures, order, retries with
backoff, dead letters and redelivery (waorch.webhooks.delivery called directly, no Celery)."""

from __future__ import annotations

import json
import random
import time
from email.message import Message

import pytest

from tests.support.local_http import LocalHttpServer, Reply
from tests.support.webhook_receiver import WebhookReceiver, free_port
from waorch.core import keys, settings
from waorch.webhooks import dead_letters
from waorch.webhooks import delivery as webhook_delivery
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"
SECRET = "client-secret-0123456789"


@pytest.fixture
def fast_retries(redis_url, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    monkeypatch.setenv("WAORCH_WEBHOOK_RETRY_BASE", "0.2")
    monkeypatch.setenv("WAORCH_WEBHOOK_RETRY_MAX", "0.5")
    monkeypatch.setenv("WAORCH_WEBHOOK_TIMEOUT", "3")
    settings.get.cache_clear()


def subscribe(r, url: str) -> str:
    return client_webhooks.create(r, TENANT, url, None, SECRET)[0]["id"]


def emit_status(r, key: str, *statuses: str) -> list[str]:
    events = [client_events.new_event(f"evt_{key}_{s}", "session.status", {"status": s}) for s in statuses]
    client_events.emit(r, TENANT, key, events)
    return [e["id"] for e in events]


def run_until(r, sub: str, lane: int, done, deadline: float = 30.0) -> list[webhook_delivery.LaneRun]:
    """Run the lane as the task would (waiting out each backoff) until done() holds."""
    runs = []
    end = time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, f"lane runs: {runs}"
        run = webhook_delivery.deliver_lane(r, sub, lane)
        runs.append(run)
        if run.outcome == "retry":
            time.sleep(min(run.retry_in or 0, 1.0))  # waiting out the backoff, as the countdown would
    return runs


def test_events_arrive_signed_and_in_order(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    ids = emit_status(r, "s1", "pairing", "connected", "disconnected")
    run = webhook_delivery.deliver_lane(r, sub, client_events.lane_for("s1"))
    assert run.outcome == "idle" and run.delivered == 3
    assert [e["id"] for e in receiver.events()] == ids
    for delivery in receiver.deliveries:
        assert delivery.verifies(SECRET) and not delivery.verifies("another-secret-000000")
        assert delivery.path == "/hooks/waorch"
        assert delivery.headers["X-Waorch-Event-Id"] == delivery.event["id"]
        assert delivery.headers["Content-Type"] == "application/json"
        assert set(delivery.event) == {"id", "type", "created_at", "data"}
        assert delivery.body == client_events.encode(delivery.event).encode()
        assert not r.exists(keys.client_event(delivery.event["id"]))  # delivered: forgotten
    view = client_webhooks.delivery_status(r, client_webhooks.get(r, sub))
    assert view["pending"] == 0 and view["delivered"] == 3 and view["last_error"] is None


def test_failures_back_off_and_keep_the_order(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    lane = client_events.lane_for("m1")
    ids = emit_status(r, "m1", "sent", "delivered", "read")
    receiver.status = 503
    first = webhook_delivery.deliver_lane(r, sub, lane)
    assert first.outcome == "retry" and 0.1 <= first.retry_in <= 0.2
    assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "retry"  # still pausing
    assert receiver.attempts == 1
    state = client_webhooks.delivery_status(r, client_webhooks.get(r, sub))
    assert state["last_error"] == "HTTP 503" and state["pending"] == 3 and state["failing_since"]
    time.sleep(first.retry_in)
    assert webhook_delivery.deliver_lane(r, sub, lane).retry_in <= 0.4  # second failure: base·2
    receiver.status = 200
    run_until(r, sub, lane, lambda: len(receiver.deliveries) == 3)
    assert [e["id"] for e in receiver.events()] == ids
    attempts = [int(d.headers["X-Waorch-Delivery-Attempt"]) for d in receiver.deliveries]
    assert attempts[0] >= 3 and attempts[1:] == [1, 1]
    assert client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["last_error"] is None


def test_down_endpoint_gets_everything_once_back(r, fast_retries):
    port = free_port()
    server = WebhookReceiver(port)
    sub = subscribe(r, server.url)
    lane = client_events.lane_for("s9")
    ids = emit_status(r, "s9", "a", "b")
    run = webhook_delivery.deliver_lane(r, sub, lane)
    assert run.outcome == "retry"
    assert "Connection" in client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["last_error"]
    ids += emit_status(r, "s9", "c")
    with server:
        run_until(r, sub, lane, lambda: len(server.deliveries) == 3)
    assert [e["id"] for e in server.events()] == ids


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(7)
    delays = [webhook_delivery.backoff(n, 10, 3600, rng) for n in range(1, 15)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(3600, 10 * 2 ** (n - 1))
        assert nominal / 2 <= delay <= nominal
    assert len({round(d, 6) for d in delays}) == len(delays)
    assert webhook_delivery.backoff(10_000, 10, 3600) <= 3600


def test_window_end_dead_letters_then_redelivery_arrives(r, fast_retries, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_RETRY_WINDOW", "1")
    settings.get.cache_clear()
    server = WebhookReceiver()
    sub = subscribe(r, server.url)
    lane = client_events.lane_for("s2")
    ids = emit_status(r, "s2", "x", "y")
    runs = run_until(r, sub, lane, lambda: not r.llen(keys.webhook_lane(sub, lane)), deadline=20)
    assert sum(run.dead for run in runs) == 2 and runs[-1].outcome == "idle"
    assert len(runs) >= 2  # retried inside the window first
    items, _ = dead_letters.list_dead_letters(r, TENANT)
    assert sorted(i["event_id"] for i in items) == sorted(ids)
    assert all(i["webhook_id"] == sub and i["event"]["id"] == i["event_id"] for i in items)
    assert any("Connection" in i["last_error"] for i in items)
    with server:
        for item in sorted(items, key=lambda i: i["event_id"]):
            assert dead_letters.redeliver(r, item["id"], TENANT)
        run_until(r, sub, lane, lambda: len(server.deliveries) == 2)
    assert sorted(e["id"] for e in server.events()) == sorted(ids)
    assert dead_letters.list_dead_letters(r, TENANT)[0] == []


def test_a_target_no_longer_allowed_is_not_contacted(r, fast_retries, receiver, monkeypatch):
    sub = subscribe(r, receiver.url)
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "")
    settings.get.cache_clear()
    emit_status(r, "s3", "x")
    run = webhook_delivery.deliver_lane(r, sub, client_events.lane_for("s3"))
    assert run.outcome == "retry" and receiver.attempts == 0
    assert "target refused" in client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["last_error"]


def test_one_run_per_lane_at_a_time(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    lane = client_events.lane_for("s4")
    emit_status(r, "s4", "x")
    r.set(keys.webhook_lane_lock(sub, lane), "someone-else")
    assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "busy" and receiver.attempts == 0


def test_lane_of_a_deleted_webhook_is_forgotten(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    lane = client_events.lane_for("s5")
    emit_status(r, "s5", "x")
    r.delete(keys.client_webhook(sub))  # as if deleted between emit and delivery
    assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "gone"
    assert not r.exists(keys.webhook_lane(sub, lane)) and r.zcard(keys.WEBHOOKS_DUE) == 0
    assert receiver.attempts == 0


class Redirector(LocalHttpServer):
    """An endpoint on 127.0.0.1 that answers every POST with a redirect to `location`."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__()
        self.status = status
        self.location = location
        self.hits = 0

    @property
    def url(self) -> str:
        return super().url + "/old"

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        self.hits += 1
        return self.status, {"Location": self.location}, b""


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed_and_count_as_failures(r, fast_retries, receiver, status):
    with Redirector(status, receiver.url) as redirector:
        sub = subscribe(r, redirector.url)
        lane = client_events.lane_for("s6")
        emit_status(r, "s6", "x")
        run = webhook_delivery.deliver_lane(r, sub, lane)
        assert run.outcome == "retry" and redirector.hits == 1
    assert receiver.attempts == 0  # the Location was not followed
    view = client_webhooks.delivery_status(r, client_webhooks.get(r, sub))
    assert view["last_error"] == f"HTTP {status} (redirects are not followed)" and view["pending"] == 1
    assert json.loads(r.get(keys.client_event("evt_s6_x")))["id"] == "evt_s6_x"


def test_client_errors_count_as_failures(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    emit_status(r, "s6", "x")
    receiver.status = 404
    run = webhook_delivery.deliver_lane(r, sub, client_events.lane_for("s6"))
    assert run.outcome == "retry"
    assert client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["last_error"] == "HTTP 404"
    assert client_webhooks.get(r, sub).get("disabled_at") is None  # only 410 disables


def self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for localhost/127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_verifies_the_certificate_for_the_name(r, fast_retries, tmp_path, monkeypatch):
    import ssl

    if set(client_webhooks.system_resolver("localhost", 443)) != {"127.0.0.1"}:
        pytest.skip("localhost does not resolve to 127.0.0.1 alone here")
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with WebhookReceiver(tls=tls, host="localhost") as server:
        sub = subscribe(r, server.url)
        lane = client_events.lane_for("s7")
        ids = emit_status(r, "s7", "x")
        # not trusted yet: the TLS handshake fails and nothing is delivered
        assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "retry"
        error = client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["last_error"]
        assert "SSL" in error or "certificate" in error.lower()
        assert server.deliveries == []
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # the operator trusts this CA
        r.delete(keys.webhook_lane_state(sub, lane))
        assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "idle"
    assert [e["id"] for e in server.events()] == ids and server.deliveries[0].verifies(SECRET)
    assert server.deliveries[0].headers["Host"] == f"localhost:{server.port}"


def test_a_lost_delivery_task_is_recovered_by_the_sweep(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    emit_status(r, "s8", "x")
    lane = client_events.lane_for("s8")
    assert r.llen("events") == 1  # the delivery task was published to the Celery `events` queue
    r.delete("events")  # ... and lost
    now = time.time()
    assert webhook_delivery.claim_due(r, now) == []  # its task still has its grace period
    due = webhook_delivery.claim_due(r, now + client_events.DIRECT_GRACE + 1)
    assert due == [(sub, lane)]
    assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "idle"
    assert len(receiver.deliveries) == 1 and r.zcard(keys.WEBHOOKS_DUE) == 0


def test_410_gone_disables_the_webhook_and_keeps_its_events_as_dead_letters(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    lane = client_events.lane_for("s10")
    ids = emit_status(r, "s10", "x", "y") + emit_status(r, "s11", "z")
    receiver.status = 410
    run = webhook_delivery.deliver_lane(r, sub, lane)
    assert run.outcome == "disabled" and run.dead == 3 and receiver.attempts == 1
    record = client_webhooks.get(r, sub)
    view = client_webhooks.public_view(record)
    assert view["status"] == "disabled" and view["disabled_reason"] == "HTTP 410 Gone" and view["disabled_at"]
    assert client_webhooks.delivery_status(r, record)["pending"] == 0 and r.zcard(keys.WEBHOOKS_DUE) == 0
    letters = {i["event_id"]: i for i in dead_letters.list_dead_letters(r, TENANT)[0]}
    assert sorted(letters) == sorted(ids)
    assert letters[ids[0]]["attempts"] == 1 and letters[ids[0]]["last_error"] == "HTTP 410 Gone"
    assert letters[ids[2]]["attempts"] == 0 and "disabled" in letters[ids[2]]["last_error"]
    # events for it stop being queued, and nothing is posted any more
    emit_status(r, "s10", "later")
    assert not r.exists(keys.webhook_lane(sub, lane)) and not r.exists(keys.client_event("evt_s10_later"))
    with pytest.raises(dead_letters.WebhookDisabled):
        dead_letters.redeliver(r, letters[ids[0]]["id"], TENANT)
    # enabled again: new events and redelivered dead letters flow
    receiver.status = 200
    assert client_webhooks.public_view(client_webhooks.enable(r, sub, TENANT))["status"] == "active"
    assert dead_letters.redeliver(r, letters[ids[0]]["id"], TENANT)
    after = emit_status(r, "s10", "again")
    run_until(r, sub, lane, lambda: len(receiver.deliveries) == 2)
    assert [e["id"] for e in receiver.events()] == [ids[0], *after]
    assert receiver.attempts == 3


def test_events_queued_for_a_disabled_webhook_are_not_posted(r, fast_retries, receiver):
    sub = subscribe(r, receiver.url)
    lane = client_events.lane_for("s12")
    emit_status(r, "s12", "x")
    r.hset(keys.client_webhook(sub), mapping={"disabled_at": "1", "disabled_reason": "HTTP 410 Gone"})
    run = webhook_delivery.deliver_lane(r, sub, lane)
    assert run.outcome == "disabled" and run.dead == 1 and receiver.attempts == 0
    assert not r.exists(keys.webhook_lane(sub, lane))


def test_queued_events_follow_an_update_to_the_new_url_and_secret(r, fast_retries, receiver):
    old = WebhookReceiver()  # never started: the old endpoint is gone
    sub = subscribe(r, old.url)
    lane = client_events.lane_for("s5")
    ids = emit_status(r, "s5", "a", "b")
    assert webhook_delivery.deliver_lane(r, sub, lane).outcome == "retry"
    _, new_secret = client_webhooks.update(r, sub, TENANT, url=receiver.url, rotate_secret=True)
    ids += emit_status(r, "s5", "c")
    run_until(r, sub, lane, lambda: len(receiver.deliveries) == 3)
    assert [e["id"] for e in receiver.events()] == ids  # nothing lost or reordered by the change
    assert all(d.verifies(new_secret) and not d.verifies(SECRET) for d in receiver.deliveries)
    view, _ = client_webhooks.update(r, sub, TENANT, events=["message.status"])
    assert view["delivery"]["delivered"] == 3  # the answer to a change shows the delivery so far
    emit_status(r, "s5", "d")  # session.status is no longer wanted: not queued
    assert client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["pending"] == 0
