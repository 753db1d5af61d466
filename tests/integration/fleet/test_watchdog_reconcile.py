"""Watchdog housekeeping on a real Redis, and the beat tasks called as plain functions."""

from __future__ import annotations

import time

from tasks.orchestration import check_proxies, check_proxy
from tasks.watchdog import LOCK, watchdog
from tests.support.lua_alone import lua_remove_proxy
from waorch.alerts import events as alert_events
from waorch.core import keys
from waorch.fleet import lifecycle, worker_events
from waorch.fleet import watchdog as watchdog_logic
from waorch.proxies.pool import ProxyPool, proxy_id, proxy_sessions_key
from waorch.sessions import registry as sessions


def _pool(r, n=2):
    pool = ProxyPool(r)
    for i in range(n):
        pool.add(f"socks5h://127.0.0.{i + 2}:1080")
    return pool


def test_without_a_runner_it_reports_and_still_keeps_the_registry_tidy(r):
    pool = _pool(r)
    url = pool.urls()[0]
    r.sadd(proxy_sessions_key(url), "ghost")  # a slot left behind by a crash between two steps
    report = watchdog_logic.reconcile(r)
    assert "supervisor" in report["error"]
    assert report["released"] == ["ghost"] and pool.sessions_on(url) == []


def test_sessions_on_a_removed_proxy_are_moved(r):
    pool = _pool(r)
    s = lifecycle.create_session(r, "acme", "491510000001")
    lua_remove_proxy(r, s["proxy_url"])  # removed behind the orchestrator's back
    report = watchdog_logic.reconcile(r)
    moved = sessions.get_session(r, s["id"])
    assert report["relocated"] == [s["id"]]
    assert moved["proxy_url"] in pool.urls() and moved["proxy_url"] != s["proxy_url"]
    assert moved["restarts"] == 1


def test_sessions_stranded_on_a_bad_proxy_move_once_capacity_appears(r):
    pool = ProxyPool(r)
    pool.add("socks5h://127.0.0.2:1080")
    s = lifecycle.create_session(r, "acme", "491510000001")
    r.set(keys.proxy_status(s["proxy_url"]), "BAD")
    assert watchdog_logic.reconcile(r)["relocated"] == []  # nowhere to go yet
    assert "no proxy capacity" in sessions.get_session(r, s["id"])["last_error"]
    pool.add("socks5h://127.0.0.3:1080")
    assert watchdog_logic.reconcile(r)["relocated"] == [s["id"]]
    assert sessions.get_session(r, s["id"])["proxy_url"] == "socks5h://127.0.0.3:1080"


def test_ended_restriction_resolves_its_alert(r):
    _pool(r)
    s = lifecycle.create_session(r, "acme", "491510000001")
    worker_events.apply(r, s["id"], "RESTRICTED", {"until": time.time() + 3600}, time.time())
    watchdog_logic.reconcile(r)
    assert [a["kind"] for a in alert_events.active_alerts(r)] == [alert_events.SESSION_RESTRICTED]
    watchdog_logic.reconcile(r, now=time.time() + 7200)
    # no runner host runs here, so two hours on the session is also down (its own alert)
    assert [a["kind"] for a in alert_events.active_alerts(r)] == [alert_events.SESSION_DOWN]
    resolved = [e for e in alert_events.list_events(r) if e["state"] == "resolved"]
    assert [e["kind"] for e in resolved] == [alert_events.SESSION_RESTRICTED]


def test_beat_tasks_run_and_do_not_overlap(r):
    _pool(r, 1)
    assert "error" in watchdog()  # no supervisor here: reported, not raised
    r.set(LOCK, "1")
    assert watchdog() == {"skipped": "another watchdog round is running"}
    r.delete(LOCK)
    assert check_proxies() == 1  # nothing listens on 127.0.0.2:1080: one failure recorded
    url = ProxyPool(r).urls()[0]
    assert int(r.get(f"proxy:fails:{url}")) == 1
    assert check_proxy(proxy_id(url)) == "OK"  # below the threshold
    assert check_proxy("unknown") is None
