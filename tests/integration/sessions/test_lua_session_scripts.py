"""Session registry scripts on a real Redis: create, transitions, PING, delete, concurrency."""

from __future__ import annotations

import json
import threading

from tests.support.lua_alone import lua_delete_session, lua_ping
from waorch.core import keys, lua
from waorch.proxies.pool import ProxyPool, proxy_sessions_key
from waorch.sessions import registry as sessions


def _create(r, sid: str, phone: str, tenant: str = "acme", url: str = "socks5h://127.0.0.2:1080"):
    return sessions.CREATE(r, session_id=sid, tenant=tenant, phone=phone, now="1000.000", status="starting",
                           fields=lua.pairs({"proxy_url": url, "salt": "abc"}))


def test_create_registers_everywhere(r):
    assert _create(r, "s1", "491510000001") == ["ok", "s1"]
    assert r.hget(keys.session("s1"), "status") == "starting"
    assert r.get(keys.session_status("s1")) == "starting"
    assert r.sismember(keys.SESSIONS_ACTIVE, "s1") and r.sismember(keys.SESSIONS_ALL, "s1")
    assert r.sismember(sessions.tenant_sessions_key("acme"), "s1")
    assert r.get(keys.session_by_phone("491510000001")) == "s1"


def test_second_session_for_a_phone_is_refused(r):
    _create(r, "s1", "491510000001")
    assert _create(r, "s2", "491510000001") == ["exists", "s1"]
    assert not r.exists(keys.session("s2"))


def test_concurrent_creates_for_one_phone_leave_exactly_one(r, redis_url):
    import redis as redis_lib

    outcomes: list[str] = []
    gate = threading.Event()

    def attempt(n: int) -> None:
        client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        gate.wait(10)
        outcomes.append(_create(client, f"s{n}", "491510000009")[0])

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(60)
    assert outcomes.count("ok") == 1 and outcomes.count("exists") == 19
    assert r.scard(keys.SESSIONS_ALL) == 1


def test_transition_keeps_sticky_statuses_unless_forced(r):
    _create(r, "s1", "491510000001")
    assert sessions.transition(r, "s1", "banned") == ("starting", "banned")
    assert sessions.transition(r, "s1", "connected") == ("banned", "banned")
    assert sessions.transition(r, "s1", "starting", force=True) == ("banned", "starting")
    assert sessions.transition(r, "missing", "connected") is None


def test_transition_sets_desired_qr_fields_and_events(r):
    _create(r, "s1", "491510000001")
    sessions.transition(r, "s1", "pairing", qr="2@abc", event={"event": "QR"},
                        fields={"pair_code": "X"})
    assert r.get(keys.session_qr("s1")) == "2@abc" and 0 < r.ttl(keys.session_qr("s1")) <= sessions.QR_TTL
    sessions.transition(r, "s1", desired="stopped", clear_qr=True, count_restart=True)
    assert not r.exists(keys.session_qr("s1"))
    assert not r.sismember(keys.SESSIONS_ACTIVE, "s1")
    record = r.hgetall(keys.session("s1"))
    assert record["desired"] == "stopped" and record["restarts"] == "1" and record["pair_code"] == "X"
    assert [json.loads(e)["event"] for e in r.lrange(keys.session_events("s1"), 0, -1)] == ["QR"]


def test_event_list_is_capped(r):
    _create(r, "s1", "491510000001")
    for i in range(sessions.EVENTS_CAP + 30):
        sessions.transition(r, "s1", event={"event": "X", "n": i})
    items = r.lrange(keys.session_events("s1"), 0, -1)
    assert len(items) == sessions.EVENTS_CAP
    assert json.loads(items[0])["n"] == sessions.EVENTS_CAP + 29


def test_ping_connects_and_disconnects(r):
    _create(r, "s1", "491510000001")
    r.set(keys.session_qr("s1"), "old qr")
    def ping(now: str, connected: bool, counters: dict | None = None) -> list:
        return sessions.RECORD_PING(r, session_id="s1", now=now, connected="1" if connected else "0",
                                    event="{}", events_cap=10, counters=lua.pairs(counters or {}))

    assert ping("2000", True, {"sent": 5}) == ["ok", "starting", "connected"]
    assert not r.exists(keys.session_qr("s1"))
    assert r.hget(keys.session("s1"), "sent") == "5" and r.hget(keys.session("s1"), "last_ping") == "2000"
    assert ping("2001", False) == ["ok", "connected", "disconnected"]
    sessions.transition(r, "s1", "banned")
    assert ping("2002", True) == ["ok", "banned", "banned"]
    assert lua_ping(r, "nope", True)[0] == "missing"


def test_delete_frees_the_proxy_slot_and_keeps_stickiness(r):
    pool = ProxyPool(r, ceiling=4)
    url = pool.add("socks5h://127.0.0.2:1080")[0] and pool.urls()[0]
    pool.allocate("s1", "491510000001")
    _create(r, "s1", "491510000001", url=url)
    r.set(keys.session_qr("s1"), "q")
    assert lua_delete_session(r, "s1") == ["ok", "491510000001", url]
    assert r.scard(proxy_sessions_key(url)) == 0 and r.get(keys.proxy_counter(url)) == "0"
    assert r.sismember(keys.PROXIES_AVAILABLE, url)
    assert r.get(keys.phone_proxy("491510000001")) == url
    for key in (keys.session("s1"), keys.session_qr("s1"), keys.session_status("s1"),
                keys.session_by_phone("491510000001")):
        assert not r.exists(key), key
    assert not r.sismember(keys.SESSIONS_ALL, "s1") and not r.sismember(keys.SESSIONS_ACTIVE, "s1")
    assert lua_delete_session(r, "s1")[0] == "missing"
