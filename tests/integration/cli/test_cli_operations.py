"""`waorch alert`, `waorch message` and `waorch webhook` as real subprocesses against the test Redis
(and, for `alert test`, a real Celery worker delivering to a fake Telegram Bot API)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.webhooks.test_client_webhooks_api import dead_letter
from tests.support.celery_worker import CeleryWorker
from tests.support.commands import WAORCH
from tests.support.fake_telegram import BOT_TOKEN
from tests.support.waiting import wait_for
from waorch.alerts import delivery as alert_delivery
from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.sending import accept, outbox
from waorch.webhooks import subscriptions as client_webhooks


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(WAORCH + list(args), env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)


def test_alert_list_shows_active_alerts_recent_events_and_no_sinks(r):
    alert_events.raise_alert(r, alert_events.PROXY_BURNED, "p1", "proxy p1 burned", severity="critical")
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, "s1", "session s1 is banned")
    alert_events.resolve(r, alert_events.SESSION_DOWN, "s1", "session s1 connected again")
    listed = run("alert", "list", "--recent", "5")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "active alerts: 1"
    assert "raised" in lines[1] and "critical" in lines[1] and "proxy_burned p1: proxy p1 burned" in lines[1]
    assert lines[2] == "recent events: 3"
    assert "resolved" in lines[3] and "session s1 connected again" in lines[3]
    assert "sinks: none configured" in listed.stdout
    as_json = json.loads(run("alert", "list", "--json").stdout)
    assert [a["subject"] for a in as_json["active"]] == ["p1"] and as_json["events"] == []


def test_alert_test_without_a_sink_says_what_to_configure(r):
    refused = run("alert", "test")
    assert refused.returncode == 1 and "WAORCH_TELEGRAM_BOT_TOKEN" in refused.stderr
    assert alert_events.list_events(r) == []


def test_alert_test_reaches_telegram_through_a_real_worker_once_each(r, tmp_path, telegram, monkeypatch):
    env = {"WAORCH_TELEGRAM_BOT_TOKEN": BOT_TOKEN, "WAORCH_TELEGRAM_CHAT_ID": "4242",
           "WAORCH_TELEGRAM_API_URL": telegram.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.get.cache_clear()
    with CeleryWorker(tmp_path, queues="events", concurrency=1):
        sent = run("alert", "test")
        assert sent.returncode == 0, sent.stderr
        assert "telegram" in sent.stdout
        wait_for(lambda: alert_delivery.sink_status(r)[0]["delivered"] == 2, "both delivered", timeout=60)
        listed = run("alert", "list")
    texts = telegram.texts()
    assert len(texts) == 2 and "test alert from `waorch alert test`" in texts[0]
    assert texts[1].startswith("✅ resolved")
    assert alert_events.active_alerts(r) == []
    assert "sink telegram: pending 0, delivered 2" in listed.stdout
    assert BOT_TOKEN not in listed.stdout + listed.stderr


def test_message_show_and_list_with_filters(r):
    ids = []
    for to, tenant in (("14155550123", "acme"), ("14155550199", "acme"), ("14155550123", "globex")):
        rec = {"id": accept.new_message_id(), "to": to, "text": "hi"}
        accept.store(r, tenant, [rec], {})
        ids.append(rec["id"])
    assert outbox.fail(r, ids[1], "invalid_recipient", "not on WhatsApp")

    shown = run("message", "show", ids[1])
    assert shown.returncode == 0, shown.stderr
    head, *steps = shown.stdout.splitlines()
    assert head.startswith(f"{ids[1]}  failed (invalid_recipient)  to +14155550199  tenant acme")
    assert [s.split()[1] for s in steps] == ["queued", "failed"] and "not on WhatsApp" in steps[1]
    assert json.loads(run("message", "show", ids[0], "--json").stdout)["history"][0]["status"] == "queued"

    def listed(*args: str) -> list[str]:
        out = run("message", "list", *args)
        assert out.returncode == 0, out.stderr
        return [line.split()[0] for line in out.stdout.splitlines()]

    assert sorted(listed()) == sorted(ids)
    assert sorted(listed("--tenant", "acme")) == sorted(ids[:2])
    assert listed("--tenant", "acme", "--to", "+1 415 555 0123") == [ids[0]]
    assert listed("--status", "failed") == [ids[1]]
    assert len(listed("--limit", "2")) == 2
    lines = run("message", "list", "--tenant", "globex", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [ids[2]]


@pytest.mark.parametrize("args,code,text", [
    (["message", "show", "m-nope"], 1, "no message m-nope"),
    (["message", "list", "--to", "12"], 2, "--to"),
    (["message", "list", "--status", "lost"], 2, "--status"),
])
def test_message_bad_input_is_a_clear_error_without_traceback(r, args, code, text):
    out = run(*args)
    assert out.returncode == code and text in out.stderr and "Traceback" not in out.stderr


def test_webhook_list_dead_letters_redeliver_and_enable(r, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    view, secret = client_webhooks.create(r, "acme", "http://127.0.0.1:9/hook")
    sub = view["id"]
    dl_ids = [dead_letter(r, sub, f"evt_cli_{i}") for i in range(3)]

    listed = run("webhook", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{sub}  acme  active  http://127.0.0.1:9/hook  pending 0")
    assert secret not in listed.stdout + run("webhook", "list", "--json").stdout
    assert run("webhook", "list", "--tenant", "globex").stdout == ""

    dead = run("webhook", "dead-letters", "--limit", "2")
    assert dead.returncode == 0 and len(dead.stdout.splitlines()) == 2
    assert {json.loads(line)["id"] for line in run("webhook", "dead-letters", "--json").stdout.splitlines()} \
        == set(dl_ids)

    again = run("webhook", "redeliver", dl_ids[0], "dl_nope")
    assert again.returncode == 1
    assert f"{dl_ids[0]}: queued again" in again.stdout and "dl_nope: no such dead letter" in again.stderr
    assert client_webhooks.delivery_status(r, client_webhooks.get(r, sub))["pending"] == 1

    r.hset(keys.client_webhook(sub), mapping={"disabled_at": "1", "disabled_reason": "HTTP 410 Gone"})
    refused = run("webhook", "redeliver", dl_ids[1])
    assert refused.returncode == 1 and "disabled" in refused.stderr
    assert run("webhook", "enable", sub).stdout.strip() == f"{sub}: enabled"
    assert client_webhooks.public_view(client_webhooks.get(r, sub))["status"] == "active"
    assert run("webhook", "redeliver", dl_ids[1]).returncode == 0
    missing = run("webhook", "enable", "wh_nope")
    assert missing.returncode == 1 and "no webhook wh_nope" in missing.stderr
