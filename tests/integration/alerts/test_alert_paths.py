"""Every alert kind has a raise and a recovery path (real Redis, the watchdog round as a plain
call), and GET /api/alerts shows them to admins."""

from __future__ import annotations

import time

from tests.support.lua_alone import lua_remove_proxy
from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.fleet import lifecycle, proxy_failover, watchdog, worker_events
from waorch.proxies.pool import ProxyPool, proxy_id
from waorch.sessions import registry as sessions


def _active(r) -> set[tuple[str, str]]:
    return {(a["kind"], a["subject"]) for a in alert_events.active_alerts(r)}


def _states(r, kind: str, subject: str) -> list[str]:
    return [e["state"] for e in reversed(alert_events.list_events(r))
            if (e["kind"], e["subject"]) == (kind, subject)]


def test_session_down_recovers_when_pings_say_connected(r):
    ProxyPool(r).add("socks5h://127.0.0.2:1080")
    s = lifecycle.create_session(r, "acme", "491510000001")
    sid = s["id"]
    # the watchdog's PING timeout: alert, and the restart makes it `starting`
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, sid, f"session {sid} stopped answering")
    lifecycle.restart_session(r, sid, reason="no PING")
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, sid) in _active(r)  # still starting: still down
    # the restarted worker only PINGs connected (no CONNECTED event): the round notices
    worker_events.apply(r, sid, "PING", {"connected": True}, time.time())
    assert sessions.get_session(r, sid)["status"] == "connected"
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, sid) not in _active(r)
    assert _states(r, alert_events.SESSION_DOWN, sid) == ["raised", "resolved"]


def test_session_down_stays_while_connected_but_silent(r):
    ProxyPool(r).add("socks5h://127.0.0.2:1080")
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "PING", {"connected": True}, time.time())
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, sid, "silent")
    watchdog.reconcile(r, now=time.time() + settings.get().ping_timeout + 30)
    assert (alert_events.SESSION_DOWN, sid) in _active(r)


def test_banned_session_stays_down_until_connected_again_or_deleted(r):
    ProxyPool(r).add("socks5h://127.0.0.2:1080")
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "ERROR", {"code": "BANNED"}, time.time())
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, sid) in _active(r)
    r.delete(keys.session(sid))  # gone without delete_session (a crash, a manual cleanup)
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, sid) not in _active(r)


def test_burned_proxy_removed_from_the_inventory_resolves(r):
    pool = ProxyPool(r)
    pool.add("socks5h://127.0.0.2:1080")
    url = "socks5h://127.0.0.3:1080"
    pool.add(url)
    r.set(keys.proxy_status(url), "BAD")  # what the failing checks recorded
    proxy_failover.on_burned(r, url, "proxy unreachable")
    assert (alert_events.PROXY_BURNED, proxy_id(url)) in _active(r)
    watchdog.reconcile(r)
    assert (alert_events.PROXY_BURNED, proxy_id(url)) in _active(r)  # still there, still BAD
    lua_remove_proxy(r, url)
    watchdog.reconcile(r)
    assert (alert_events.PROXY_BURNED, proxy_id(url)) not in _active(r)
    assert _states(r, alert_events.PROXY_BURNED, proxy_id(url)) == ["raised", "resolved"]


def test_burned_proxy_found_ok_resolves(r):
    url = "socks5h://127.0.0.3:1080"
    ProxyPool(r).add(url)
    r.set(keys.proxy_status(url), "BAD")
    proxy_failover.on_burned(r, url, "proxy unreachable")
    watchdog.reconcile(r)
    assert (alert_events.PROXY_BURNED, proxy_id(url)) in _active(r)
    r.set(keys.proxy_status(url), "OK")  # e.g. a check that recovered it before the alert was raised
    watchdog.reconcile(r)
    assert (alert_events.PROXY_BURNED, proxy_id(url)) not in _active(r)


def test_low_proxy_slots_raise_and_recover_after_deletes(r):
    ProxyPool(r).add("socks5h://127.0.0.2:1080")  # ceiling 4, threshold 2
    created = [lifecycle.create_session(r, "acme", f"49151000000{i}")["id"] for i in range(3)]
    assert (alert_events.LOW_INVENTORY, "proxies") in _active(r)  # 1 free slot left
    for sid in created[:2]:
        lifecycle.delete_session(r, sid)
    watchdog.reconcile(r)  # deleting does not look at the inventory; the watchdog round does
    assert (alert_events.LOW_INVENTORY, "proxies") not in _active(r)
    assert _states(r, alert_events.LOW_INVENTORY, "proxies") == ["raised", "resolved"]


def test_no_proxies_at_all_is_low_inventory(r):
    watchdog.reconcile(r)
    assert (alert_events.LOW_INVENTORY, "proxies") in _active(r)


def test_alerts_api_shows_active_alerts_and_events_to_admins(r, gateway, admin_key, api_key, monkeypatch):
    import requests

    monkeypatch.setenv("WAORCH_TELEGRAM_BOT_TOKEN", "1:api-test-token-s3cr3t")
    monkeypatch.setenv("WAORCH_TELEGRAM_CHAT_ID", "42")
    monkeypatch.setenv("WAORCH_TELEGRAM_API_URL", "http://127.0.0.1:9")
    settings.get.cache_clear()
    alert_events.raise_alert(r, alert_events.BACKUP_FAILED, "backup", "backup failed: disk full",
                             severity="critical")
    alert_events.raise_alert(r, alert_events.PROXY_BURNED, "p1", "proxy burned")
    alert_events.resolve(r, alert_events.PROXY_BURNED, "p1", "proxy works again")
    answer = requests.get(f"{gateway.url}/api/alerts", headers={"X-API-Key": admin_key}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(a["kind"], a["subject"]) for a in body["active"]] == [("backup_failed", "backup")]
    assert body["active"] == alert_events.active_alerts(r)
    assert body["events"] == alert_events.list_events(r)
    assert [e["state"] for e in body["events"]] == ["resolved", "raised", "raised"]
    assert body["sinks"][0]["sink"] == "telegram" and body["sinks"][0]["pending"] == 3
    assert "api-test-token" not in answer.text
    limited = requests.get(f"{gateway.url}/api/alerts?limit=1", headers={"X-API-Key": admin_key}, timeout=30)
    assert len(limited.json()["events"]) == 1
    bad = requests.get(f"{gateway.url}/api/alerts?limit=0", headers={"X-API-Key": admin_key}, timeout=30)
    assert bad.status_code == 422 and bad.json()["code"]
    forbidden = requests.get(f"{gateway.url}/api/alerts", headers={"X-API-Key": api_key}, timeout=30)
    assert forbidden.status_code == 403
    assert requests.get(f"{gateway.url}/api/alerts", timeout=30).status_code == 401
