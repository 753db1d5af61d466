"""Session-down alerts for the two former gaps: a worker the runner cannot start at all, and a
session stopped on request (real Redis, watchdog rounds as plain calls)."""

from __future__ import annotations

import socket
import time

import pytest

from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.fleet import lifecycle, watchdog, worker_events
from waorch.proxies.pool import ProxyPool
from waorch.sessions import registry as sessions


def _active(r) -> dict[tuple[str, str], dict]:
    return {(a["kind"], a["subject"]): a for a in alert_events.active_alerts(r)}


def _events(r, sid: str) -> list[dict]:
    return [e for e in reversed(alert_events.list_events(r))
            if (e["kind"], e["subject"]) == (alert_events.SESSION_DOWN, sid)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the with block ends


@pytest.fixture
def session_id(r) -> str:
    ProxyPool(r).add("socks5h://127.0.0.2:1080")
    return lifecycle.create_session(r, "acme", "491510000001")["id"]


def test_unstartable_worker_process_runner_is_down_after_the_grace(r, session_id):
    # no `waorch supervisor` runs: the process runner cannot start anything
    assert sessions.get_session(r, session_id)["last_error"].startswith("runner unavailable")
    grace = settings.get().ping_timeout
    report = watchdog.reconcile(r)
    assert "error" in report
    assert (alert_events.SESSION_DOWN, session_id) not in _active(r)  # within the grace: no alert yet
    watchdog.reconcile(r, now=time.time() + grace + 30)
    alert = _active(r)[(alert_events.SESSION_DOWN, session_id)]
    assert "cannot be started" in alert["message"] and "supervisor" in alert["message"]
    watchdog.reconcile(r, now=time.time() + grace + 60)  # still down: one incident, one alert
    assert [e["state"] for e in _events(r, session_id)] == ["raised"]
    # the runner is back and the worker connects
    worker_events.apply(r, session_id, "CONNECTED", {"jid": "491510000001@s.whatsapp.net"},
                                time.time())
    assert (alert_events.SESSION_DOWN, session_id) not in _active(r)
    assert [e["state"] for e in _events(r, session_id)] == ["raised", "resolved"]


def test_unstartable_worker_docker_runner_unreachable(r, monkeypatch):
    monkeypatch.setenv("WAORCH_RUNNER", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    settings.get.cache_clear()
    ProxyPool(r).add("socks5h://127.0.0.2:1080")
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    assert sessions.get_session(r, sid)["last_error"].startswith("runner unavailable")
    watchdog.reconcile(r, now=time.time() + settings.get().ping_timeout + 30)
    alert = _active(r)[(alert_events.SESSION_DOWN, sid)]
    assert "cannot be started" in alert["message"] and alert["severity"] == "critical"
    # PING-only recovery (no CONNECTED event) resolves it too
    worker_events.apply(r, sid, "PING", {"connected": True}, time.time())
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, sid) not in _active(r)
    assert [e["state"] for e in _events(r, sid)] == ["raised", "resolved"]


def test_runner_down_but_worker_still_pinging_is_not_down(r, session_id):
    timeout = settings.get().ping_timeout
    r.hset(keys.session(session_id), "started_at", f"{time.time() - 10 * timeout:.3f}")  # long ago
    worker_events.apply(r, session_id, "PING", {"connected": False}, time.time())
    watchdog.reconcile(r)  # the runner is down, but the worker's PINGs are fresh
    assert (alert_events.SESSION_DOWN, session_id) not in _active(r)
    watchdog.reconcile(r, now=time.time() + timeout + 30)  # and once they are stale, it is down
    assert (alert_events.SESSION_DOWN, session_id) in _active(r)


def test_stop_on_request_resolves_session_down_with_a_notice(r, session_id):
    watchdog.reconcile(r, now=time.time() + settings.get().ping_timeout + 30)
    assert (alert_events.SESSION_DOWN, session_id) in _active(r)
    assert lifecycle.stop_session(r, session_id, reason="operator")
    assert (alert_events.SESSION_DOWN, session_id) not in _active(r)
    events = _events(r, session_id)
    assert [e["state"] for e in events] == ["raised", "resolved"]
    assert "stopped on request" in events[-1]["message"] and events[-1]["severity"] == "info"
    # a stopped session is not wanted: later rounds raise nothing for it
    watchdog.reconcile(r, now=time.time() + settings.get().ping_timeout + 90)
    assert len(_events(r, session_id)) == 2


def test_watchdog_resolves_down_alert_of_a_session_already_stopped(r, session_id):
    lifecycle.stop_session(r, session_id, reason="operator")
    # an alert raised after the stop (e.g. a late worker event from another process)
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, session_id, "late alert")
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, session_id) not in _active(r)
    assert "stopped on request" in _events(r, session_id)[-1]["message"]


def test_banned_session_stays_down_although_its_desired_state_is_stopped(r, session_id):
    worker_events.apply(r, session_id, "ERROR", {"code": "BANNED"}, time.time())
    assert sessions.get_session(r, session_id)["desired"] == "stopped"
    watchdog.reconcile(r)
    assert (alert_events.SESSION_DOWN, session_id) in _active(r)
