"""The message scripts on a real Redis: accept, route, reserve, claim, ack, nack, receipts."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from waorch.core import keys
from waorch.messages import records as messages
from waorch.policy.pacing import Pace
from waorch.sending import accept, outbox

SESSION, PHONE = "s1", "14155550100"
PACE = Pace(per_minute=60, jitter=0.3)  # 1 s mean interval, 0.7 s minimum gap


def accept_n(r, n: int, tenant: str = "t1", distinct: bool = False) -> list[str]:
    """n messages to one person (sent in acceptance order), or with `distinct` to n people."""
    records = [{"id": accept.new_message_id(), "to": f"1415555{i:04d}" if distinct else "14155550123",
                "text": f"hello {i}"} for i in range(n)]
    accept.store(r, tenant, records, {"ids": [rec["id"] for rec in records]})
    return [rec["id"] for rec in records]


def route_all(r, ids: list[str]) -> None:
    for msg_id in ids:
        assert outbox.route(r, msg_id, SESSION, PHONE)


def statuses(r, ids: list[str]) -> list[str]:
    return [r.hget(keys.message(i), "status") for i in ids]


def test_accept_creates_records_with_history(r):
    [msg_id] = accept_n(r, 1)
    view = messages.get_message(r, msg_id)
    assert view["status"] == "queued"
    assert [h["status"] for h in view["history"]] == ["queued"]
    assert r.zscore(keys.MESSAGES_UNROUTED, msg_id) is not None
    assert messages.get_message(r, msg_id, tenant="other") is None


def test_idempotency_replays_same_body_and_refuses_another(r):
    rec = {"id": "m1", "to": "14155550123", "text": "hi"}
    first = accept.store(r, "t1", [rec], {"id": "m1"}, "key-1", "hash-a")
    assert not first.replayed and first.new_ids == ["m1"]
    again = accept.store(r, "t1", [{**rec, "id": "m2"}], {"id": "m2"}, "key-1", "hash-a")
    assert again.replayed and again.response == {"id": "m1"} and again.new_ids == []
    assert not r.exists(keys.message("m2"))
    with pytest.raises(accept.IdempotencyConflict):
        accept.store(r, "t1", [{**rec, "id": "m3"}], {"id": "m3"}, "key-1", "hash-b")
    # keys are per tenant
    other = accept.store(r, "t2", [{**rec, "id": "m4"}], {"id": "m4"}, "key-1", "hash-b")
    assert not other.replayed


def test_concurrent_idempotent_accepts_create_one_message(r):
    def attempt(i):
        rec = {"id": f"c{i}", "to": "14155550123", "text": "x"}
        return accept.store(r, "t1", [rec], {"id": f"c{i}"}, "same", "h")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(64)))
    created = [res for res in results if not res.replayed]
    assert len(created) == 1
    assert {res.response["id"] for res in results} == {created[0].new_ids[0]}
    assert r.zcard(keys.MESSAGES_ALL) == 1


def test_route_only_once(r):
    [msg_id] = accept_n(r, 1)
    assert outbox.route(r, msg_id, SESSION, PHONE)
    assert not outbox.route(r, msg_id, SESSION, PHONE)
    assert r.lrange(keys.session_queue(PHONE), 0, -1) == [msg_id]
    assert r.zscore(keys.MESSAGES_UNROUTED, msg_id) is None


def test_reserved_slots_are_spaced_by_jittered_interval(r):
    ids = accept_n(r, 30)
    route_all(r, ids)
    now = 1_000_000.0
    assert outbox.reserve_slots(r, SESSION, PHONE, PACE, now=now, rng=random.Random(7)) == 30
    slots = [r.zscore(keys.session_outbox(SESSION), i) for i in ids]
    assert slots[0] == pytest.approx(now)
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= PACE.min_gap - 1e-6
    assert max(gaps) <= PACE.interval * 1.3 + 1e-6
    assert len({round(g, 3) for g in gaps}) > 5  # jitter is present
    assert set(statuses(r, ids)) == {"scheduled"}


def test_reserve_respects_horizon(r, monkeypatch):
    monkeypatch.setenv("WAORCH_SCHEDULE_HORIZON", "5")
    from waorch.core import settings
    settings.get.cache_clear()
    ids = accept_n(r, 20)
    route_all(r, ids)
    n = outbox.reserve_slots(r, SESSION, PHONE, Pace(per_minute=60, jitter=0), now=100.0)
    assert n == 6  # slots at 100..105
    assert r.llen(keys.session_queue(PHONE)) == 14


def test_claim_waits_for_slot_and_pacing_gap(r):
    ids = accept_n(r, 3)
    route_all(r, ids)
    outbox.reserve_slots(r, SESSION, PHONE, Pace(per_minute=60, jitter=0), now=100.0)
    assert outbox.claim(r, SESSION, PACE, now=99.0).outcome == "wait"
    first = outbox.claim(r, SESSION, PACE, now=100.0)
    assert first.outcome == "claimed" and first.message["id"] == ids[0]
    # second slot is due at 101 but the claim gap is at least 0.7 s after 100
    early = outbox.claim(r, SESSION, PACE, now=100.5)
    assert early.outcome == "wait" and early.ready_at >= 100.7
    # the same person's next message waits for the first to be sent (per-recipient order)
    assert outbox.ack(r, SESSION, ids[0], first.message["lease_token"], "WA0", now=100.6) == "ok"
    assert outbox.claim(r, SESSION, PACE, now=102.0).message["id"] == ids[1]
    assert statuses(r, ids)[:2] == ["sent", "claimed"]


def test_concurrent_claimers_never_break_the_gap(r):
    """16 threads hammer claim for one session: one claim per minimum gap, no double claim."""
    ids = accept_n(r, 40, distinct=True)  # nothing is acked: to one person only one would go
    route_all(r, ids)
    fast = Pace(per_minute=600, jitter=0.3)  # 0.1 s mean, 0.07 s min gap
    outbox.reserve_slots(r, SESSION, PHONE, Pace(per_minute=6000, jitter=0), now=0)
    claims: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer():
        import time
        while not stop.is_set():
            now = time.time()
            res = outbox.claim(r, SESSION, fast, now=now)
            if res.outcome == "claimed":
                with lock:
                    claims.append((now, res.message["id"]))

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(claims) < 15:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert len(claims) >= 15
    claimed_ids = [c[1] for c in claims]
    assert len(claimed_ids) == len(set(claimed_ids))
    times = sorted(c[0] for c in claims)
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= fast.min_gap - 1e-3


def test_ack_is_idempotent_and_indexes_wa_id(r):
    [msg_id] = accept_n(r, 1)
    route_all(r, [msg_id])
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=10)
    c = outbox.claim(r, SESSION, PACE, now=10)
    assert outbox.ack(r, SESSION, msg_id, c.message["lease_token"], "WA1", now=11) == "ok"
    assert outbox.ack(r, SESSION, msg_id, c.message["lease_token"], "WA1", now=12) == "duplicate"
    assert r.get(keys.wa_message(SESSION, "WA1")) == msg_id
    assert r.zcard(keys.session_leases(SESSION)) == 0
    assert outbox.record_receipt(r, SESSION, "WA1", "read", at=13) == msg_id
    assert outbox.record_receipt(r, SESSION, "WA1", "delivered", at=14) is None  # never backwards
    hist = [h["status"] for h in messages.history(r, msg_id)]
    assert hist == ["queued", "routed", "scheduled", "claimed", "sent", "delivered", "read"]


def test_nack_retries_with_backoff_then_fails(r, monkeypatch):
    monkeypatch.setenv("WAORCH_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("WAORCH_RETRY_BASE", "5")
    from waorch.core import settings
    settings.get.cache_clear()
    [msg_id] = accept_n(r, 1)
    route_all(r, [msg_id])
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=10)
    c = outbox.claim(r, SESSION, PACE, now=10)
    assert outbox.nack(r, SESSION, msg_id, "wrong-token", "x", True, now=11) == "stale"
    assert outbox.nack(r, SESSION, msg_id, c.message["lease_token"], "timeout", True, now=11) == "retry"
    assert r.zscore(keys.session_outbox(SESSION), msg_id) == pytest.approx(16)
    c2 = outbox.claim(r, SESSION, PACE, now=16)
    assert c2.message["attempt"] == 2
    assert outbox.nack(r, SESSION, msg_id, c2.message["lease_token"], "timeout", True, now=17) == "failed"
    view = messages.get_message(r, msg_id)
    assert view["status"] == "failed" and view["reason"] == "send_error"


def test_expired_lease_returns_message(r):
    [msg_id] = accept_n(r, 1)
    route_all(r, [msg_id])
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=10)
    c = outbox.claim(r, SESSION, PACE, now=10, lease_seconds=30)
    assert outbox.requeue_expired(r, SESSION, now=39) == 0
    assert outbox.requeue_expired(r, SESSION, now=41) == 1
    assert r.hget(keys.message(msg_id), "status") == "scheduled"
    again = outbox.claim(r, SESSION, PACE, now=42)
    assert again.message["id"] == msg_id and again.message["lease_token"] != c.message["lease_token"]
    # the old lease's late ACK still records the send (the worker's journal makes it once)
    assert outbox.ack(r, SESSION, msg_id, c.message["lease_token"], "WA9", now=43) == "ok"


def test_expired_message_fails_at_claim(r):
    rec = {"id": "e1", "to": "14155550123", "text": "x", "expires_at": 50}
    accept.store(r, "t1", [rec], {})
    route_all(r, ["e1"])
    outbox.reserve_slots(r, SESSION, PHONE, PACE, now=10)
    assert outbox.claim(r, SESSION, PACE, now=60).outcome == "empty"
    view = messages.get_message(r, "e1")
    assert view["status"] == "failed" and view["reason"] == "expired"


def test_fail_only_non_terminal(r):
    [msg_id] = accept_n(r, 1)
    assert outbox.fail(r, msg_id, "no_session", "no connected session")
    assert not outbox.fail(r, msg_id, "no_session")
    assert r.zscore(keys.MESSAGES_UNROUTED, msg_id) is None


def test_listing_pages_newest_first(r):
    ids = []
    for i in range(7):
        rec = {"id": f"p{i}", "to": "14155550123", "text": "x"}
        accept.store(r, "t1", [rec], {}, now=1000 + i)
        ids.append(f"p{i}")
    page1, cursor = messages.list_messages(r, "t1", limit=3)
    page2, cursor2 = messages.list_messages(r, "t1", cursor=cursor, limit=3)
    page3, cursor3 = messages.list_messages(r, "t1", cursor=cursor2, limit=3)
    got = [m["id"] for m in page1 + page2 + page3]
    assert got == list(reversed(ids)) and cursor3 is None
    assert messages.list_messages(r, "t2")[0] == []


def test_a_rare_filter_costs_bounded_work_per_page_and_still_finds_everything(r):
    for i in range(25):
        accept.store(r, "t1", [{"id": f"q{i:02d}", "to": "14155550123", "text": "x"}], {}, now=1000 + i)
    assert outbox.fail(r, "q00", "no_session")  # the only failed one, and the oldest
    pages, cursor = [], None
    while True:
        items, cursor = messages.list_messages(r, "t1", status="failed", cursor=cursor, limit=5,
                                               scan_limit=10)
        pages.append([m["id"] for m in items])
        if cursor is None:
            break
    # 10 + 10 examined without a match, then the last 5 with it: three requests
    assert pages == [[], [], ["q00"]]
    found, cursor = messages.list_messages(r, "t1", to="14155550123", limit=30)
    assert len(found) == 25 and cursor is None
    assert messages.list_messages(r, "t1", to="14155550199")[0] == []
