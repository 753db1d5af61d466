"""What the watchdog and the dashboard overview read instead of every session, on a real Redis:
sessions:last_ping (kept by the session scripts) and one page of sessions plus counters."""

from __future__ import annotations

import time

from tests.support.policy_support import accept
from waorch.core import keys
from waorch.fleet import lifecycle, overview, watchdog, worker_events
from waorch.proxies.pool import ProxyPool
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions


def fleet(r, n: int) -> list[str]:
    pool = ProxyPool(r)
    for i in range((n + 3) // 4):
        pool.add(f"socks5h://127.0.{i // 200}.{2 + i % 200}:1080")
    return [lifecycle.create_session(r, "acme", f"4915100{i:05d}")["id"] for i in range(n)]


def last_signs(r) -> dict[str, float]:
    """What sessions:last_ping should hold: desired sessions and their later of PING and start."""
    found = {}
    for s in sessions.list_sessions(r):
        if s.get("desired") == "active":
            found[s["id"]] = round(max(s["last_ping"] or 0, s["started_at"] or 0), 3)
    return found


def test_last_ping_index_follows_pings_restarts_stops_and_deletes(r):
    ids = fleet(r, 6)

    def index() -> dict[str, float]:
        return {k: round(v, 3) for k, v in r.zrange(keys.SESSIONS_LAST_PING, 0, -1, withscores=True)}

    assert index() == last_signs(r) and set(index()) == set(ids)
    t = time.time()
    worker_events.apply(r, ids[0], "PING", {"connected": True}, t)
    worker_events.apply(r, ids[1], "CONNECTED", {"jid": "x@s.whatsapp.net"}, t)
    lifecycle.restart_session(r, ids[2], reason="test")
    lifecycle.stop_session(r, ids[3], reason="test")
    lifecycle.delete_session(r, ids[4])
    assert index() == last_signs(r) and set(index()) == {ids[0], ids[1], ids[2], ids[5]}
    # silent since a moment after the last changes: only the one nobody heard from
    assert watchdog.silent_sessions(r, t - 0.001) == [ids[5]]
    silent_later = watchdog.silent_sessions(r, time.time() + 1)
    assert set(silent_later) == {ids[0], ids[1], ids[2], ids[5]}
    assert watchdog.silent_sessions(r, min(index().values())) == []


def test_overview_pages_through_the_sessions_and_counts_from_the_state_counters(r):
    ids = fleet(r, 25)
    dispatching.ensure_indexes(r)
    worker_events.apply(r, ids[0], "CONNECTED", {"jid": "x@s.whatsapp.net"}, time.time())
    msgs = [m for i in range(5) for m in accept(r, "acme", f"1415555{i:04d}", 1)]
    session = sessions.get_session(r, ids[0])
    for msg_id in msgs[:3]:
        assert outbox.route(r, msg_id, ids[0], session["phone"])
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        page = overview.overview(r, cursor=cursor, limit=10)
        assert page["sessions_total"] == 25
        assert len(page["sessions"]) <= 20  # about `limit`: SSCAN's count is a hint
        seen += [s["id"] for s in page["sessions"]]
        pages += 1
        if page["sessions_cursor"] is None:
            break
        cursor = page["sessions_cursor"]
    assert sorted(seen) == sorted(ids) and pages >= 2  # every session once, on several pages
    whole = overview.overview(r, limit=1000)
    assert whole["sessions_cursor"] is None and len(whole["sessions"]) == 25
    load = {s["id"]: s for s in whole["sessions"]}[ids[0]]
    assert (load["routed"], load["queue_depth"]) == (3, 3)
    assert whole["queues"]["routed"] == 3 and whole["queues"]["unrouted"] == 2
    assert (whole["queues"]["scheduled"], whole["queues"]["claimed"]) == (0, 0)
