"""The session registry API of waorch.sessions.registry on a real Redis (process runner, no supervisor)."""

from __future__ import annotations

import json
import time

import pytest

from waorch.alerts import events as alert_events
from waorch.core import keys, settings, signing
from waorch.fleet import lifecycle, worker_events
from waorch.proxies.pool import ProxyPool
from waorch.sessions import registry as sessions


@pytest.fixture
def pool(r):
    pool = ProxyPool(r)
    pool.add("socks5h://alice:s3cret@127.0.0.2:1080")
    pool.add("socks5h://bob:hunter2@127.0.0.3:1080")
    return pool


def test_create_allocates_proxy_profile_and_desired_state(r, pool):
    s = lifecycle.create_session(r, "acme", "491510000001", label="shop")
    assert s["status"] == "starting" and s["tenant"] == "acme" and s["label"] == "shop"
    assert s["proxy_url"] in pool.urls() and s["profile"]["id"]
    assert s["trust_level"] == "new" and len(s["salt"]) == 32
    assert r.sismember(keys.SESSIONS_ACTIVE, s["id"])
    # no supervisor runs here: the registry says so instead of failing the creation
    assert "runner unavailable" in s["last_error"]
    assert sessions.get_session(r, s["id"])["id"] == s["id"]


def test_duplicate_phone_is_refused_and_releases_nothing_twice(r, pool):
    s = lifecycle.create_session(r, "acme", "491510000001")
    with pytest.raises(sessions.SessionExists) as info:
        lifecycle.create_session(r, "acme", "491510000001")
    assert info.value.session_id == s["id"]
    assert sum(v["sessions"] for v in pool.list()) == 1


def test_no_proxy_capacity_is_a_clear_error(r):
    with pytest.raises(lifecycle.NoProxyCapacity, match="no proxy capacity"):
        lifecycle.create_session(r, "acme", "491510000001")
    assert r.scard(keys.SESSIONS_ALL) == 0


def test_delete_then_recreate_gets_the_same_proxy(r, pool):
    first = lifecycle.create_session(r, "acme", "491510000001")
    lifecycle.create_session(r, "acme", "491510000002")
    assert lifecycle.delete_session(r, first["id"]) is True
    assert sessions.get_session(r, first["id"]) is None
    assert lifecycle.delete_session(r, first["id"]) is False
    lifecycle.create_session(r, "acme", "491510000003")  # would take the least-loaded proxy
    again = lifecycle.create_session(r, "acme", "491510000001")
    assert again["proxy_url"] == first["proxy_url"] and again["id"] != first["id"]
    assert again["profile"] == first["profile"]


def test_listing_is_tenant_scoped(r, pool):
    a = lifecycle.create_session(r, "acme", "491510000001")
    b = lifecycle.create_session(r, "other", "491510000002")
    assert [s["id"] for s in sessions.list_sessions(r, "acme")] == [a["id"]]
    assert {s["id"] for s in sessions.list_sessions(r)} == {a["id"], b["id"]}


def test_public_view_hides_credentials_and_salt(r, pool):
    s = lifecycle.create_session(r, "acme", "491510000001")
    view = sessions.public_view(s)
    text = json.dumps(view)
    for secret in ("s3cret", "hunter2", "alice", "bob", s["salt"], sessions.session_secret(s)):
        assert secret not in text
    assert view["proxy"]["url"].startswith("socks5h://***:***@127.0.0.")


def test_worker_environment_contract(r, pool, monkeypatch, tmp_path):
    monkeypatch.setenv("WAORCH_PUBLIC_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("WAORCH_SIM_WIRE", "127.0.0.1:7000")
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path))
    settings.get.cache_clear()
    s = lifecycle.create_session(r, "acme", "491510000001")
    env = sessions.worker_environment(s)
    assert env["SESSION_ID"] == s["id"] and env["PHONE"] == "491510000001"
    assert env["PROXY_URL"] == s["proxy_url"]
    assert env["WEBHOOK_URL"] == "http://127.0.0.1:9999/api/webhook"
    assert env["ORCHESTRATOR_URL"] == "http://127.0.0.1:9999"
    assert env["WEBHOOK_SECRET"] == signing.derive_secret("test-master-key", f"session:{s['id']}:{s['salt']}")
    assert env["SESSIONS_DIR"] == str(tmp_path.resolve() / "sessions")
    assert json.loads(env["PROFILE"]) == s["profile"]
    assert env["ENABLE_KEEP_ALIVE"] == "true" and env["TRANSPORT"] == "sim"
    assert env["SIM_WIRE"] == "127.0.0.1:7000"


def test_worker_events_drive_the_status(r, pool):
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    now = time.time()
    assert worker_events.apply(r, sid, "QR", {"qr": "2@secret-qr"}, now) == ("starting", "pairing")
    assert r.get(keys.session_qr(sid)) == "2@secret-qr"
    assert worker_events.apply(r, sid, "CONNECTED", {"jid": "491510000001@s.whatsapp.net"}, now) \
        == ("pairing", "connected")
    assert not r.exists(keys.session_qr(sid))
    ping = {"connected": True, "sent": 7, "failed": 1, "claimed": 8}
    worker_events.apply(r, sid, "PING", ping, now)
    s = sessions.get_session(r, sid)
    assert (s["sent"], s["failed"], s["claimed"]) == (7, 1, 8) and s["last_ping"] >= now - 1
    assert s["last_error"] == ""
    worker_events.apply(r, sid, "ERROR", {"code": "CONNECTION_LOST", "detail": "eof"}, now)
    assert sessions.get_session(r, sid)["status"] == "error"
    events = [json.loads(e) for e in r.lrange(keys.session_events(sid), 0, -1)]
    assert [e["event"] for e in events][:4] == ["ERROR", "PING", "CONNECTED", "QR"]
    assert "secret-qr" not in json.dumps(events)  # login material stays out of the history


def test_banned_stops_the_session_and_alerts(r, pool):
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "ERROR", {"code": "BANNED"}, time.time())
    s = sessions.get_session(r, sid)
    assert s["status"] == "banned" and s["desired"] == "stopped"
    assert not r.sismember(keys.SESSIONS_ACTIVE, sid)
    worker_events.apply(r, sid, "PING", {"connected": True}, time.time())
    assert sessions.get_session(r, sid)["status"] == "banned"
    assert any(a["kind"] == "session_down" and a["subject"] == sid for a in alert_events.active_alerts(r))
    restarted = lifecycle.restart_session(r, sid)
    assert restarted["status"] == "starting" and restarted["restarts"] == 1
    assert r.sismember(keys.SESSIONS_ACTIVE, sid)


def test_restricted_pauses_sending_and_demotes(r, pool):
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "CONNECTED", {}, time.time())
    assert [s["id"] for s in sessions.sendable_sessions(r, "acme")] == [sid]
    until = time.time() + 600
    worker_events.apply(r, sid, "RESTRICTED", {"reason": "463", "until": until}, time.time())
    s = sessions.get_session(r, sid)
    assert s["status"] == "connected" and abs(s["paused_until"] - until) < 0.01
    assert s["trust_level"] == "restricted" and s["trust_before_restriction"] == "new"
    assert sessions.sendable_sessions(r, "acme") == []
    assert sessions.sendable_sessions(r, "other") == []


def test_stopping_after_stop_is_stopped_not_disconnected(r, pool):
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "STOPPING", {}, time.time())
    assert sessions.get_session(r, sid)["status"] == "disconnected"
    lifecycle.stop_session(r, sid, reason="operator")
    worker_events.apply(r, sid, "STOPPING", {}, time.time())
    assert sessions.get_session(r, sid)["status"] == "stopped"


def test_unknown_session_events_are_ignored(r):
    assert worker_events.apply(r, "nope", "PING", {}, time.time()) is None
    assert worker_events.apply(r, "nope", "QR", {"qr": "x"}, time.time()) is None
    assert not r.exists(keys.session_qr("nope"))


def test_logged_out_alerts_and_pairs_again(r, pool):
    sid = lifecycle.create_session(r, "acme", "491510000001")["id"]
    worker_events.apply(r, sid, "CONNECTED", {}, time.time())
    worker_events.apply(r, sid, "ERROR", {"code": "LOGGED_OUT"}, time.time())
    s = sessions.get_session(r, sid)
    assert s["status"] == "logged_out" and s["desired"] == "active"
    assert any(a["kind"] == "session_down" for a in alert_events.active_alerts(r))
    changed = worker_events.apply(r, sid, "QR", {"qr": "2@new"}, time.time())
    assert changed == ("logged_out", "pairing")
    worker_events.apply(r, sid, "CONNECTED", {}, time.time())
    assert alert_events.active_alerts(r) == []
