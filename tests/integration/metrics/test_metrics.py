"""GET /metrics over real HTTP: Prometheus text that moves with sends, sessions, proxies and ACKs."""

from __future__ import annotations

import os
import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_client import ThreadedGateway
from tests.support.celery_worker import CeleryWorker
from tests.support.policy_support import FAST_POLICY, connected_session, use_policy
from tests.support.waiting import wait_for
from waorch.core import redis_client, settings
from waorch.launcher.redis_server import start_local_redis
from waorch.policy import pacing
from waorch.proxies.pool import ProxyPool, proxy_id
from waorch.sending import outbox
from waorch.sessions import registry as sessions

TENANT = "acme"
SECRET = "s3cr3t-pw"


def scrape(gateway, headers: dict | None = None) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape."""
    res = requests.get(gateway.url + "/metrics", headers=headers or {}, timeout=30)
    assert res.status_code == 200, res.text
    assert res.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(res.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape_until(gateway, predicate, what: str, timeout: float = 90) -> dict:
    """The first scrape for which `predicate` holds."""
    return wait_for(lambda: (lambda s: s if predicate(s) else None)(scrape(gateway)), what, timeout)


def value(samples: dict, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_empty_install_scrapes_every_family_with_zeroes(gateway):
    s = scrape(gateway)
    for state in ("queued", "routed", "scheduled", "claimed", "sent", "delivered", "read", "failed"):
        assert value(s, "waorch_messages", state=state) == 0
        assert (("state", state),) in s["waorch_message_transitions_total"]
    for queue in ("dispatch", "orchestrator", "events", "maintenance"):
        assert (("queue", queue),) in s["waorch_celery_queue_length"]
    assert value(s, "waorch_sessions", status="connected") == 0
    assert value(s, "waorch_proxies", status="OK") == 0
    assert value(s, "waorch_send_latency_seconds_count") == 0
    assert value(s, "waorch_send_latency_seconds_bucket", le="+Inf") == 0
    assert value(s, "waorch_proxy_free_slots") == 0


def test_sends_move_through_dispatch_and_ack_fills_the_histogram(r, redis_url, gateway, api_client,
                                                                  tmp_path, monkeypatch):
    path = use_policy(monkeypatch, tmp_path, FAST_POLICY)
    session = connected_session(r, TENANT, "12025550111")
    for i in range(3):
        res = api_client.send(f"+1415555{1000 + i:04d}", f"hello {i}")
        assert res.status_code == 202, res.text
    s = scrape(gateway)
    assert value(s, "waorch_messages", state="queued") == 3
    assert value(s, "waorch_message_transitions_total", state="queued") == 3
    assert value(s, "waorch_messages_unrouted") == 3
    assert value(s, "waorch_celery_queue_length", queue="dispatch") == 3  # one task per send

    env = {**os.environ, "REDIS_URL": redis_url, "WAORCH_POLICY_FILE": str(path)}
    with CeleryWorker(tmp_path, queues="dispatch", concurrency=1, env=env):
        s = scrape_until(gateway, lambda s: value(s, "waorch_messages", state="queued") == 0,
                         "every message routed by the Celery worker")
        wait_for(lambda: value(scrape(gateway), "waorch_celery_tasks_total",
                               task="tasks.dispatch.dispatch_messages", state="succeeded") == 3,
                 "three dispatch tasks counted as succeeded", timeout=60)
        runs = {"task": "tasks.dispatch.dispatch_messages"}
        timed = scrape_until(
            gateway, lambda t: value(t, "waorch_celery_task_duration_seconds_count", **runs) == 3,
            "three dispatch runs timed", timeout=60)
    assert value(timed, "waorch_celery_task_duration_seconds_bucket", le="+Inf", **runs) == 3
    assert 0 < value(timed, "waorch_celery_task_duration_seconds_sum", **runs) < 60
    assert value(s, "waorch_celery_queue_length", queue="dispatch") == 0
    assert value(s, "waorch_messages", state="routed") + value(s, "waorch_messages", state="scheduled") == 3
    sid = session["id"]
    depth = sum(value(s, "waorch_session_queue_messages", session=sid, tenant=TENANT, queue=q)
                for q in ("waiting", "scheduled", "leased"))
    assert depth == 3

    # claim and ACK one message the way the worker endpoints do
    pace = pacing.pace_for(sessions.get_session(r, sid))
    claim = wait_for(lambda: (lambda c: c if c.outcome == "claimed" else None)(outbox.claim(r, sid, pace)),
                     "a message due for claiming", timeout=60)
    created = float(r.hget(f"msg:{claim.message['id']}", "created_at"))
    sent_at = created + 42.0  # a known accepted→sent time: lands in the (30, 60] bucket
    assert outbox.ack(r, sid, claim.message["id"], claim.message["lease_token"], "wa-1",
                      sent_at=sent_at) == "ok"
    s = scrape(gateway)
    assert value(s, "waorch_send_latency_seconds_count") == 1
    assert value(s, "waorch_send_latency_seconds_sum") == pytest.approx(42.0, abs=0.01)
    assert value(s, "waorch_send_latency_seconds_bucket", le="30") == 0
    assert value(s, "waorch_send_latency_seconds_bucket", le="60") == 1
    assert value(s, "waorch_send_latency_seconds_bucket", le="+Inf") == 1
    assert value(s, "waorch_messages", state="sent") == 1
    assert value(s, "waorch_message_transitions_total", state="sent") == 1
    assert value(s, "waorch_message_transitions_total", state="claimed") == 1
    total = sum(value(s, "waorch_messages", state=st) for st in
                ("queued", "routed", "scheduled", "claimed", "sent", "delivered", "read", "failed"))
    assert total == 3  # each message counted once, in its current state
    # a duplicate ACK is not a second observation
    assert outbox.ack(r, sid, claim.message["id"], claim.message["lease_token"], "wa-1",
                      sent_at=sent_at) == "duplicate"
    assert value(scrape(gateway), "waorch_send_latency_seconds_count") == 1


def test_gateway_requests_are_counted_by_route_method_and_status(r, gateway, api_client):
    for _ in range(2):
        assert requests.get(gateway.url + "/api/health", timeout=10).status_code == 200
    assert requests.get(gateway.url + "/api/messages", timeout=10).status_code == 401
    assert api_client.post("/api/send", json={"to": "12"}).status_code == 422
    assert api_client.get("/api/messages/m_not_there").status_code == 404
    assert requests.get(gateway.url + "/no/such/page", timeout=10).status_code == 404
    s = scrape(gateway)
    counted = s["waorch_http_requests_total"]
    assert value(s, "waorch_http_requests_total", endpoint="/api/health", method="GET", status="200") == 2
    assert value(s, "waorch_http_requests_total", endpoint="/api/messages", method="GET", status="401") == 1
    assert value(s, "waorch_http_requests_total", endpoint="/api/send", method="POST", status="422") == 1
    assert value(s, "waorch_http_requests_total", endpoint="/api/messages/<string:msg_id>", method="GET",
                 status="404") == 1
    assert value(s, "waorch_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert not any("m_not_there" in str(labels) for labels in counted)  # route templates, never paths
    health = {"endpoint": "/api/health"}
    assert value(s, "waorch_http_request_duration_seconds_count", **health) == 2
    assert value(s, "waorch_http_request_duration_seconds_bucket", le="+Inf", **health) == 2
    assert value(s, "waorch_http_request_duration_seconds_bucket", le="30", **health) == 2
    assert 0 < value(s, "waorch_http_request_duration_seconds_sum", **health) < 30
    # the scrape itself is counted once it has been answered
    assert value(scrape(gateway), "waorch_http_requests_total", endpoint="/metrics", method="GET",
                 status="200") == 1


def test_task_runs_are_counted_by_outcome_and_timed(r, gateway):
    from waorch.metrics import celery_tasks as task_metrics

    task_metrics.record(r, "tasks.x", "SUCCESS", 0.005, now=123.0)
    task_metrics.record(r, "tasks.x", "FAILURE", 0.7)
    task_metrics.record(r, "tasks.x", "RETRY", 2.0)
    task_metrics.record(r, "tasks.x", "IGNORED", 0.03)  # timed, but no outcome
    s = scrape(gateway)
    for state, n in (("succeeded", 1), ("failed", 1), ("retried", 1)):
        assert value(s, "waorch_celery_tasks_total", task="tasks.x", state=state) == n
    assert value(s, "waorch_celery_task_last_success_timestamp_seconds", task="tasks.x") == 123.0
    x = {"task": "tasks.x"}
    assert value(s, "waorch_celery_task_duration_seconds_count", **x) == 4
    assert [value(s, "waorch_celery_task_duration_seconds_bucket", le=le, **x)
            for le in ("0.01", "0.05", "1", "5", "+Inf")] == [1, 2, 3, 4, 4]
    assert value(s, "waorch_celery_task_duration_seconds_sum", **x) == pytest.approx(2.735)


def test_a_process_tally_reaches_redis_in_the_background_and_survives_a_redis_outage(r, redis_url):
    from waorch.metrics.http import RequestTally

    tally = RequestTally(flush_every=60)
    tally.observe("/api/send", "POST", 202, 0.02)
    tally.observe("/api/send", "POST", 202, 0.3)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    assert tally.flush(dead) == 0  # Redis away: nothing lost, kept for the next flush
    tally.observe("/api/send", "POST", 429, 0.001)
    assert tally.flush(r) == 3
    assert r.hgetall("metrics:http:requests") == {"/api/send|POST|202": "2", "/api/send|POST|429": "1"}
    stored = r.hgetall("metrics:http:duration")
    assert stored["/api/send|b:0.025"] == "1" and stored["/api/send|b:0.5"] == "1"
    assert stored["/api/send|b:0.005"] == "1" and float(stored["/api/send|sum"]) == pytest.approx(0.321)
    assert tally.flush(r) == 0  # nothing new: nothing written

    background = RequestTally(flush_every=0.2)
    background.observe("/api/health", "GET", 200, 0.001)  # starts its flusher thread
    wait_for(lambda: r.hget("metrics:http:requests", "/api/health|GET|200") == "1",
             "the background flush", timeout=30)


def test_session_and_proxy_changes_show_without_secrets(r, gateway):
    pool = ProxyPool(r)
    view, _ = pool.add(f"socks5h://user:{SECRET}@127.0.0.9:1080")
    url = pool.resolve(view["id"])
    session = connected_session(r, TENANT, "12025550199")
    s = scrape(gateway)
    assert value(s, "waorch_sessions", status="connected") == 1
    assert value(s, "waorch_sessions_desired_active") == 1
    assert value(s, "waorch_proxies", status="OK") == 1
    assert value(s, "waorch_proxy_up", proxy=proxy_id(url)) == 1
    assert value(s, "waorch_proxy_sessions", proxy=proxy_id(url)) == 1
    assert value(s, "waorch_proxy_free_slots") == settings.get().proxy_ceiling - 1

    sessions.transition(r, session["id"], "disconnected")
    for _ in range(settings.get().proxy_fail_threshold):
        pool.report(url, False, "refused")
    res = requests.get(gateway.url + "/metrics", timeout=30)
    assert SECRET not in res.text and "user:" not in res.text
    s = scrape(gateway)
    assert value(s, "waorch_sessions", status="connected") == 0
    assert value(s, "waorch_sessions", status="disconnected") == 1
    assert value(s, "waorch_proxies", status="BAD") == 1
    assert value(s, "waorch_proxy_up", proxy=proxy_id(url)) == 0
    assert value(s, "waorch_proxy_consecutive_failures", proxy=proxy_id(url)) >= 3
    assert value(s, "waorch_proxy_free_slots") == 0


def test_token_when_configured(redis_url, monkeypatch):
    from app import create_app  # noqa: PLC0415

    monkeypatch.setenv("WAORCH_METRICS_TOKEN", "scrape-token")
    settings.get.cache_clear()
    with ThreadedGateway(create_app()) as gw:
        res = requests.get(gw.url + "/metrics", timeout=30)
        assert res.status_code == 401 and res.json()["code"] == "unauthorized"
        assert "scrape-token" not in res.text
        res = requests.get(gw.url + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=30)
        assert res.status_code == 401
        assert "waorch_messages" in scrape(gw, {"Authorization": "Bearer scrape-token"})


def test_redis_down_is_a_plain_503(tmp_path, monkeypatch):
    from app import create_app  # noqa: PLC0415

    server = start_local_redis(tmp_path / "redis", appendonly=False)
    monkeypatch.setenv("REDIS_URL", server.url)
    settings.get.cache_clear()
    redis_client.reset_clients()
    try:
        with ThreadedGateway(create_app()) as gw:
            assert requests.get(gw.url + "/metrics", timeout=30).status_code == 200
            server.stop()
            started = time.monotonic()
            res = requests.get(gw.url + "/metrics", timeout=30)
            assert res.status_code == 503
            assert res.headers["Content-Type"].startswith("text/plain")
            assert res.text == "redis unavailable\n"
            assert time.monotonic() - started < 10
    finally:
        server.stop()
        settings.get.cache_clear()
        redis_client.reset_clients()
