"""Alerts end to end through a real Celery worker (queue `events`) on the real Redis, to a fake
Telegram Bot API and a webhook receiver on 127.0.0.1: exactly one message per incident and one
recovery, also when Telegram fails for a while; the rate limit groups; the token stays secret; a
proxy burned by a real health check (dead SOCKS5 port) reaches Telegram, and so does its recovery."""

from __future__ import annotations

import socketserver
import threading

import pytest

from tests.support.celery_worker import CeleryWorker
from tests.support.fake_telegram import BOT_TOKEN
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import free_port
from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.proxies.pool import ProxyPool, proxy_id
from waorch.simulator.socks5 import Socks5Server

CHAT = "4242"
HOOK_SECRET = "alert-hook-secret-worker-0123"
PASSWORD = "pr0xy-pa55-alerts"


@pytest.fixture
def alert_env(redis_url, monkeypatch, telegram, receiver):
    values = {"WAORCH_TELEGRAM_BOT_TOKEN": BOT_TOKEN, "WAORCH_TELEGRAM_CHAT_ID": CHAT,
              "WAORCH_TELEGRAM_API_URL": telegram.url, "WAORCH_ALERT_WEBHOOK_URL": receiver.url,
              "WAORCH_ALERT_WEBHOOK_SECRET": HOOK_SECRET, "WAORCH_ALERT_RETRY_BASE": "0.3"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings.get.cache_clear()
    return monkeypatch


@pytest.fixture
def worker_factory(alert_env, tmp_path):
    started: list[CeleryWorker] = []

    def start(queues: str = "events") -> CeleryWorker:
        settings.get.cache_clear()
        worker = CeleryWorker(tmp_path, queues=queues, concurrency=2).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def quiet(r) -> bool:
    """Nothing left to send and no run in flight: no further message can come."""
    return not any(r.zcard(keys.alert_outbox(s)) or r.exists(keys.alert_sink_lock(s))
                   for s in ("telegram", "webhook"))


def test_one_message_per_incident_and_one_recovery(r, worker_factory, telegram, receiver):
    worker_factory()
    for attempt in range(5):
        alert_events.raise_alert(r, alert_events.SESSION_DOWN, "s_41", f"session s_41 is banned ({attempt})",
                                 severity="critical")
    wait_for(lambda: telegram.texts(), "the alert on Telegram")
    wait_for(lambda: quiet(r), "delivery to finish", timeout=60)
    assert len(telegram.texts()) == 1 and "session down (s_41)" in telegram.texts()[0]
    alert_events.resolve(r, alert_events.SESSION_DOWN, "s_41", "session s_41 connected again")
    wait_for(lambda: len(telegram.texts()) >= 2, "the recovery on Telegram")
    wait_for(lambda: quiet(r), "delivery to finish", timeout=60)
    assert len(telegram.texts()) == 2 and telegram.texts()[1].startswith("✅ resolved: session down")
    assert telegram.attempts == 2
    receiver.wait_for(lambda rc: len(rc.deliveries) >= 2, what="both webhook events")
    assert len(receiver.deliveries) == 2
    assert all(d.verifies(HOOK_SECRET) for d in receiver.deliveries)
    assert [d.event["events"][0]["state"] for d in receiver.deliveries] == ["raised", "resolved"]


def test_telegram_down_for_a_while_still_gets_exactly_one_of_each(r, worker_factory, telegram, receiver):
    worker = worker_factory()
    telegram.status = 500
    alert_events.raise_alert(r, alert_events.BURST_DETECTED, "s_7:send", "burst: 30 sends in 60 s")
    # the webhook sink does not wait for Telegram
    receiver.wait_for(lambda rc: len(rc.deliveries) == 1, what="the webhook alert")
    wait_for(lambda: telegram.attempts >= 3, "three failed attempts (backoff retries)", timeout=60)
    alert_events.resolve(r, alert_events.BURST_DETECTED, "s_7:send", "cooldown over")
    assert telegram.texts() == []
    telegram.status = 200
    wait_for(lambda: len(telegram.texts()) >= 2, "both messages once Telegram is back", timeout=60)
    wait_for(lambda: quiet(r), "delivery to finish", timeout=60)
    texts = telegram.texts()
    assert len(texts) == 2 and "burst detected" in texts[0] and texts[1].startswith("✅ resolved")
    assert len(receiver.deliveries) == 2
    log = worker.log()
    assert "alert sink telegram failed (HTTP 500" in log  # the failure was logged ...
    assert BOT_TOKEN not in log and BOT_TOKEN.split(":")[1] not in log  # ... without the token


def test_rate_limit_groups_the_surplus(r, worker_factory, telegram, alert_env):
    alert_env.setenv("WAORCH_ALERT_RATE_LIMIT", "3")
    alert_env.setenv("WAORCH_ALERT_RATE_WINDOW", "3600")
    settings.get.cache_clear()
    for i in range(6):
        alert_events.raise_alert(r, alert_events.PROXY_BURNED, f"p{i}", f"proxy p{i} burned")
    worker_factory()  # started after the burst: its first run sees all six
    wait_for(lambda: len(telegram.texts()) >= 3, "three messages")
    wait_for(lambda: quiet(r), "delivery to finish", timeout=60)
    texts = telegram.texts()
    assert len(texts) == 3 and texts[2].startswith("4 alerts grouped")
    assert [sum(f"(p{i})" in t for t in texts) for i in range(6)] == [1] * 6  # each exactly once


@pytest.fixture
def check_target(alert_env):
    class Accept(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Accept)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alert_env.setenv("WAORCH_PROXY_CHECK_TARGET", f"127.0.0.1:{server.server_address[1]}")
    alert_env.setenv("WAORCH_PROXY_CHECK_TIMEOUT", "5")
    alert_env.setenv("WAORCH_PROXY_FAIL_THRESHOLD", "2")
    alert_env.setenv("WAORCH_LOW_INVENTORY", "0")  # this test is about the burned proxy only
    settings.get.cache_clear()
    yield
    server.shutdown()
    server.server_close()


def test_proxy_burned_by_a_real_health_check_reaches_telegram(r, check_target, worker_factory, telegram):
    from tasks.celery_app import app

    port = free_port()  # nothing listens yet: the proxy is dead
    proxy = Socks5Server(host="127.0.0.1", port=port, username="u", password=PASSWORD)
    ProxyPool(r).add(proxy.url)
    pid = proxy_id(proxy.url)
    worker_factory("orchestrator,events")
    for fails in (1, 2):
        app.send_task("tasks.orchestration.check_proxy", args=[pid])
        wait_for(lambda n=fails: int(r.get(f"proxy:fails:{proxy.url}") or 0) >= n, f"failure {fails}")
    wait_for(lambda: telegram.texts(), "the proxy-burned alert")
    assert r.get(keys.proxy_status(proxy.url)) == "BAD"
    proxy.start_in_thread()
    try:
        app.send_task("tasks.orchestration.check_proxy", args=[pid])
        wait_for(lambda: len(telegram.texts()) >= 2, "the recovery notice")
        wait_for(lambda: quiet(r), "delivery to finish", timeout=60)
    finally:
        proxy.stop()
    texts = telegram.texts()
    assert len(texts) == 2
    assert texts[0].startswith("🔴 proxy burned") and f"({pid})" in texts[0] and "unreachable" in texts[0]
    assert texts[1].startswith("✅ resolved: proxy burned") and "works again" in texts[1]
    assert not any(PASSWORD in t for t in texts)
