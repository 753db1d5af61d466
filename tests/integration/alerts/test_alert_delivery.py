"""Alert delivery runs in this process (waorch.alerts.delivery, no Celery) on the real Redis, to a
fake Telegram Bot API and a webhook receiver on 127.0.0.1: one message per incident and one per
recovery, signed webhooks, backoff after failures, the rate limit's summaries, no token anywhere."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from tests.support.fake_telegram import BOT_TOKEN, FakeTelegram
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver, free_port
from waorch.alerts import delivery as alert_delivery
from waorch.alerts import events as alert_events
from waorch.alerts import sinks as alert_sinks
from waorch.core import keys, settings

CHAT = "-100424242"
HOOK_SECRET = "alert-hook-secret-0123456789"


@pytest.fixture
def configure(redis_url, monkeypatch):
    def apply(telegram: FakeTelegram | None = None, receiver: WebhookReceiver | None = None,
              **extra: str) -> list:
        if telegram is not None:
            monkeypatch.setenv("WAORCH_TELEGRAM_BOT_TOKEN", BOT_TOKEN)
            monkeypatch.setenv("WAORCH_TELEGRAM_CHAT_ID", CHAT)
            monkeypatch.setenv("WAORCH_TELEGRAM_API_URL", telegram.url)
        if receiver is not None:
            monkeypatch.setenv("WAORCH_ALERT_WEBHOOK_URL", receiver.url)
            monkeypatch.setenv("WAORCH_ALERT_WEBHOOK_SECRET", HOOK_SECRET)
        monkeypatch.setenv("WAORCH_ALERT_RETRY_BASE", "0.2")
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        settings.get.cache_clear()
        return alert_sinks.configured()

    return apply


def drain(r, sink, deadline: float = 30.0) -> list[alert_delivery.Run]:
    """Run the sink as its task would (waiting out each pause) until its outbox is empty."""
    runs = []
    end = time.monotonic() + deadline
    while r.zcard(keys.alert_outbox(sink.name)):
        assert time.monotonic() < end, f"runs: {runs}"
        run = alert_delivery.deliver(r, sink)
        runs.append(run)
        if run.outcome in ("retry", "waiting", "limited"):
            time.sleep(min(run.retry_in or 0.05, 1.0))  # as the task's countdown would
    return runs


def test_plan_sends_singles_while_they_fit_and_sums_up_the_surplus():
    events = [{"id": str(i)} for i in range(6)]
    assert alert_delivery.plan(events, 10) == [[e] for e in events]
    assert alert_delivery.plan(events, 6) == [[e] for e in events]
    assert alert_delivery.plan(events, 3) == [[events[0]], [events[1]], events[2:]]
    assert alert_delivery.plan(events, 1) == [events]
    assert alert_delivery.plan(events, 0) == []


def test_sinks_are_off_unless_fully_configured(configure, telegram, monkeypatch):
    assert configure() == []
    monkeypatch.setenv("WAORCH_TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("WAORCH_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    settings.get.cache_clear()
    assert alert_sinks.configured() == []  # no chat id, no webhook secret
    sinks = configure(telegram)
    assert [s.name for s in sinks] == ["telegram"]
    assert BOT_TOKEN not in repr(sinks[0])


def test_one_message_per_incident_and_one_recovery(r, configure, telegram, receiver):
    tg, hook = configure(telegram, receiver)
    for attempt in range(5):
        alert_events.raise_alert(r, alert_events.PROXY_BURNED, "p_abc", f"proxy burned (try {attempt})",
                                 severity="critical")
    assert r.zcard(keys.alert_outbox("telegram")) == 1 and r.zcard(keys.alert_outbox("webhook")) == 1
    assert alert_delivery.deliver(r, tg).outcome == "idle"
    assert alert_delivery.deliver(r, hook).outcome == "idle"
    alert_events.resolve(r, alert_events.PROXY_BURNED, "p_abc", "proxy p_abc works again")
    alert_events.resolve(r, alert_events.PROXY_BURNED, "p_abc", "again")  # not active: nothing
    drain(r, tg)
    drain(r, hook)
    assert alert_delivery.deliver(r, tg).outcome == "idle"  # nothing left to repeat
    texts = telegram.texts()
    assert len(texts) == 2 and telegram.attempts == 2
    assert "proxy burned" in texts[0] and "try 0" in texts[0] and "🔴" in texts[0]
    assert texts[1].startswith("✅ resolved: proxy burned") and "works again" in texts[1]
    assert {m.chat_id for m in telegram.messages} == {CHAT}
    # the webhook got the same two events, signed
    assert len(receiver.deliveries) == 2
    for delivery in receiver.deliveries:
        assert delivery.verifies(HOOK_SECRET) and not delivery.verifies("another-secret-0000000")
        assert delivery.event["type"] == "alerts" and delivery.event["summary"] is False
    states = [d.event["events"][0]["state"] for d in receiver.deliveries]
    assert states == ["raised", "resolved"]
    assert receiver.deliveries[0].event["events"][0] == alert_events.list_events(r)[1]
    status = {s["sink"]: s for s in alert_delivery.sink_status(r)}
    assert status["telegram"]["delivered"] == 2 and status["telegram"]["pending"] == 0


def test_failing_telegram_is_retried_with_backoff_and_sends_once(r, configure, telegram):
    (tg,) = configure(telegram, WAORCH_ALERT_RETRY_BASE="2")
    telegram.status = 500
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, "s1", "session s1 stopped answering")
    first = alert_delivery.deliver(r, tg)
    assert first.outcome == "retry" and 1.0 <= first.retry_in <= 2.0  # base, jittered
    assert alert_delivery.deliver(r, tg).outcome == "waiting"  # paused: no second attempt yet
    assert telegram.attempts == 1
    state = alert_delivery.sink_status(r)[0]
    assert state["last_error"] == "HTTP 500: Internal Server Error" and state["pending"] == 1
    # the clock is moved instead of slept: the run compares with `now`
    second = alert_delivery.deliver(r, tg, now=time.time() + first.retry_in + 0.01)
    assert second.outcome == "retry" and 2.0 <= second.retry_in <= 4.0  # base·2, jittered
    assert alert_delivery.sink_status(r)[0]["failures"] == 2 and telegram.attempts == 2
    telegram.status = 200
    alert_events.resolve(r, alert_events.SESSION_DOWN, "s1", "session s1 connected again")
    run = alert_delivery.deliver(r, tg, now=time.time() + 10)
    assert (run.outcome, run.messages) == ("idle", 2)
    assert len(telegram.texts()) == 2 and "session down" in telegram.texts()[0]
    assert "connected again" in telegram.texts()[1]
    assert alert_delivery.sink_status(r)[0]["last_error"] is None


def test_telegram_flood_wait_is_respected(r, configure, telegram):
    (tg,) = configure(telegram)
    telegram.status, telegram.retry_after = 429, 3
    alert_events.raise_alert(r, alert_events.BURST_DETECTED, "s1:send", "burst")
    run = alert_delivery.deliver(r, tg)
    assert run.outcome == "retry" and 2.9 <= run.retry_in <= 3.0


def test_rate_limit_groups_the_surplus_into_one_summary(r, configure, telegram, receiver):
    tg, hook = configure(telegram, receiver, WAORCH_ALERT_RATE_LIMIT="3", WAORCH_ALERT_RATE_WINDOW="3600")
    for i in range(6):
        alert_events.raise_alert(r, alert_events.SESSION_DOWN, f"s{i}", f"session s{i} is banned")
    run = alert_delivery.deliver(r, tg)
    assert (run.outcome, run.messages, run.events) == ("idle", 3, 6)
    texts = telegram.texts()
    assert "(s0)" in texts[0] and "(s1)" in texts[1]
    assert texts[2].startswith("4 alerts grouped") and all(f"(s{i})" in texts[2] for i in range(2, 6))
    # the window is used up: the recovery waits (counted, not dropped) until it has room again
    alert_events.resolve(r, alert_events.SESSION_DOWN, "s0", "session s0 connected again")
    limited = alert_delivery.deliver(r, tg)
    assert limited.outcome == "limited" and limited.retry_in > 3000
    assert len(telegram.texts()) == 3 and r.zcard(keys.alert_outbox("telegram")) == 1
    # the webhook (its own window) gets the grouped events in full, the recovery last
    alert_delivery.deliver(r, hook)
    summary = receiver.deliveries[-1].event
    assert len(receiver.deliveries) == 3 and summary["summary"] is True
    assert [(e["subject"], e["state"]) for e in summary["events"]] == [
        ("s2", "raised"), ("s3", "raised"), ("s4", "raised"), ("s5", "raised"), ("s0", "resolved")]
    assert alert_delivery.sink_status(r, ["telegram"])[0]["coalesced"] == 4


def test_rate_limit_window_frees_up(r, configure, telegram):
    (tg,) = configure(telegram, WAORCH_ALERT_RATE_LIMIT="1", WAORCH_ALERT_RATE_WINDOW="60")
    alert_events.raise_alert(r, alert_events.LOW_INVENTORY, "proxies", "only 1 free proxy slots left")
    alert_events.raise_alert(r, alert_events.LOW_INVENTORY, "profiles", "only 0 free profile slots left")
    assert alert_delivery.deliver(r, tg).events == 2  # one message carrying both
    alert_events.resolve(r, alert_events.LOW_INVENTORY, "proxies", "3 free proxy slots again")
    limited = alert_delivery.deliver(r, tg)
    assert limited.outcome == "limited" and 50 < limited.retry_in <= 60
    assert alert_delivery.deliver(r, tg, now=time.time() + 61).outcome == "idle"  # the window moved on
    assert len(telegram.texts()) == 2 and "resolved: low inventory" in telegram.texts()[1]


def test_events_older_than_the_retry_window_are_given_up(r, configure):
    nobody = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")  # connection refused
    (tg,) = configure(nobody, WAORCH_ALERT_RETRY_WINDOW="60")
    alert_events.raise_alert(r, alert_events.BACKUP_FAILED, "backup", "backup failed: disk full")
    assert alert_delivery.deliver(r, tg).outcome == "retry"
    state = alert_delivery.sink_status(r)[0]
    assert state["last_error"].startswith("NewConnectionError") and BOT_TOKEN not in state["last_error"]
    run = alert_delivery.deliver(r, tg, now=time.time() + 3600)
    assert run.dropped == 1 and r.zcard(keys.alert_outbox("telegram")) == 0
    assert alert_delivery.sink_status(r)[0]["gave_up"] == 1


def test_bot_token_never_reaches_logs_or_errors(r, configure, telegram, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    (tg,) = configure(telegram)
    telegram.status = 500
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, "s1", "down")
    assert alert_delivery.deliver(r, tg).outcome == "retry"
    # a wrong token (the Bot API's 401) and an unreachable API: their errors name no token
    bad = alert_sinks.TelegramSink(BOT_TOKEN + "x", CHAT, telegram.url).send([{"id": "1", "kind": "k"}])
    assert not bad.ok and bad.detail == "HTTP 401: Unauthorized"
    unreachable = alert_sinks.TelegramSink(BOT_TOKEN, CHAT, f"http://127.0.0.1:{free_port()}").send(
        [{"id": "1", "kind": "k"}])
    assert not unreachable.ok and BOT_TOKEN not in unreachable.detail and unreachable.detail
    telegram.status = 200
    r.hset(keys.alert_sink_state("telegram"), "retry_at", 0)
    assert alert_delivery.deliver(r, tg).outcome == "idle"
    assert telegram.paths and all(BOT_TOKEN in p for p in telegram.paths[:1])  # it was really used
    logged = "\n".join(f"{rec.name} {rec.getMessage()}" for rec in caplog.records)
    assert "urllib3" in logged and "/bot***/sendMessage" in logged  # urllib3's DEBUG line, redacted
    assert BOT_TOKEN not in logged and BOT_TOKEN.split(":")[1] not in logged
    assert BOT_TOKEN not in str(alert_delivery.sink_status(r))


def test_long_summaries_stay_within_telegrams_limit(r, configure, telegram):
    (tg,) = configure(telegram, WAORCH_ALERT_RATE_LIMIT="1")
    for i in range(120):
        alert_events.raise_alert(r, alert_events.SESSION_DOWN, f"session-{i:03d}", "x" * 80)
    run = alert_delivery.deliver(r, tg)
    assert run.events == 120 and run.messages == 1
    (text,) = telegram.texts()
    assert len(text) <= 4096 and text.startswith("120 alerts grouped") and "more" in text.splitlines()[-1]


def test_concurrent_runs_of_one_sink_do_not_double_send(r, configure, telegram):
    (tg,) = configure(telegram)
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, "s1", "down")
    lock = r.lock(keys.alert_sink_lock("telegram"), timeout=30)
    assert lock.acquire(blocking=False)
    assert alert_delivery.deliver(r, tg).outcome == "busy" and telegram.attempts == 0
    lock.release()
    assert alert_delivery.deliver(r, tg).outcome == "idle"
    wait_for(lambda: telegram.texts(), "the message")
    assert len(telegram.texts()) == 1
