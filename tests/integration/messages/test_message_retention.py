"""Message retention: messages/prune.lua on a real Redis (what goes, what stays, concurrency),
and the hourly task run by a real Celery worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.support.celery_worker import CeleryWorker
from tests.support.lua_alone import PHONE, SESSION, lua_ack, lua_fail, lua_receipt
from tests.support.waiting import wait_for
from waorch.core import keys, settings
from waorch.messages import records as messages
from waorch.sending import accept as acceptance
from waorch.sending import outbox
from waorch.webhooks import subscriptions as client_webhooks

DAY = 86400.0
RETENTION = 30 * DAY
NOW = 1_800_000_000.0
OLD = NOW - 40 * DAY


def accept(r, n: int, at: float, tenant: str = "t1") -> list[str]:
    records = [{"id": acceptance.new_message_id(), "to": f"1415555{i:04d}", "text": f"m{i}"}
               for i in range(n)]
    acceptance.store(r, tenant, records, {}, now=at)
    return [rec["id"] for rec in records]


def sent(r, ids: list[str], at: float) -> None:
    for msg_id in ids:
        assert outbox.route(r, msg_id, SESSION, PHONE, now=at)
        r.lrem(keys.session_queue(PHONE), 0, msg_id)  # no slot reserved: acknowledged at once
        lua_ack(r, msg_id, "no-lease", f"wa-{msg_id}", at)


def stored_by_state(r) -> Counter:
    found = Counter()
    for msg_id in r.zrange(keys.MESSAGES_ALL, 0, -1):
        found[r.hget(keys.message(msg_id), "status")] += 1
    return found


def gauge(r) -> Counter:
    return Counter({s: int(n) for s, n in r.hgetall("metrics:messages:state").items() if int(n)})


def gone(r, msg_id: str, tenant: str = "t1") -> bool:
    return not (r.exists(keys.message(msg_id), keys.message_history(msg_id))
                or r.zscore(keys.MESSAGES_ALL, msg_id) is not None
                or r.zscore(keys.tenant_messages(tenant), msg_id) is not None
                or r.exists(keys.wa_message(SESSION, f"wa-{msg_id}")))


def test_finished_messages_past_retention_go_with_everything_that_points_at_them(r):
    done_sent, done_read, done_failed = accept(r, 1, OLD), accept(r, 1, OLD), accept(r, 1, OLD)
    sent(r, done_sent + done_read, OLD + 60)
    lua_receipt(r, done_read[0], "read", OLD + 120)
    lua_fail(r, done_failed[0], "invalid_recipient", "", OLD + 60)
    waiting = accept(r, 1, OLD)  # old, but never finished: a message is never dropped unsent
    recent = accept(r, 1, NOW - DAY)
    sent(r, recent, NOW - DAY)
    read_lately = accept(r, 1, OLD)  # created long ago, its last change (a read receipt) recent
    sent(r, read_lately, OLD + 60)
    lua_receipt(r, read_lately[0], "read", NOW - DAY)

    assert messages.prune_finished(r, RETENTION, now=NOW) == 3
    for msg_id in done_sent + done_read + done_failed:
        assert gone(r, msg_id), msg_id
        assert messages.get_message(r, msg_id) is None
    for msg_id in waiting + recent + read_lately:
        assert messages.get_message(r, msg_id) is not None, msg_id
    assert r.exists(keys.wa_message(SESSION, f"wa-{recent[0]}"))
    listed = {m["id"] for m in messages.list_messages(r, "t1", limit=200)[0]}
    assert listed == set(waiting + recent + read_lately)
    assert gauge(r) == stored_by_state(r) == Counter({"queued": 1, "sent": 1, "read": 1})
    assert messages.prune_finished(r, RETENTION, now=NOW) == 0  # nothing left to do


def test_zero_retention_keeps_everything(r):
    ids = accept(r, 3, OLD)
    sent(r, ids, OLD)
    assert messages.prune_finished(r, 0, now=NOW) == 0
    assert all(messages.get_message(r, i) for i in ids)


def test_a_client_event_still_pending_keeps_its_message(r, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()
    client_webhooks.create(r, "t1", "http://127.0.0.1:9/hook", ["message.status"])
    [msg_id] = accept(r, 1, OLD)
    sent(r, [msg_id], OLD)
    assert r.zscore(keys.CLIENT_EVENTS_PENDING, f"msg:{msg_id}") is not None
    assert messages.prune_finished(r, RETENTION, now=NOW) == 0
    r.zrem(keys.CLIENT_EVENTS_PENDING, f"msg:{msg_id}")  # emitted
    assert messages.prune_finished(r, RETENTION, now=NOW) == 1 and gone(r, msg_id)


def test_unfinished_old_messages_do_not_hold_back_the_finished_behind_them(r):
    waiting = accept(r, 30, OLD - 10)  # the oldest entries: never pruned, passed over
    done = accept(r, 10, OLD)
    sent(r, done, OLD)
    assert messages.prune_finished(r, RETENTION, now=NOW, batch=7) == 10
    assert all(gone(r, i) for i in done)
    assert set(r.zrange(keys.MESSAGES_ALL, 0, -1)) == set(waiting)
    assert stored_by_state(r) == Counter({"queued": 30})


def test_concurrent_prunes_and_receipts_keep_every_count_true(r):
    ids = accept(r, 300, OLD)
    sent(r, ids, OLD)
    lately = ids[::3]  # these get a receipt now, while the prunes run: they must survive
    start = threading.Barrier(5)

    def prune() -> int:
        start.wait()
        return messages.prune_finished(r, RETENTION, now=NOW, batch=25)

    def receipts() -> None:
        start.wait()
        for msg_id in lately:
            # record_receipt is a no-op once the message is gone; then it must not come back
            lua_receipt_if_present(r, msg_id, NOW - 1)

    with ThreadPoolExecutor(5) as pool:
        prunes = [pool.submit(prune) for _ in range(4)]
        pool.submit(receipts).result()
        total = sum(f.result() for f in prunes)
    total += messages.prune_finished(r, RETENTION, now=NOW)
    remaining = r.zrange(keys.MESSAGES_ALL, 0, -1)
    assert total + len(remaining) == 300
    assert set(remaining) <= set(lately)
    for msg_id in set(ids) - set(remaining):
        assert gone(r, msg_id)
    for msg_id in remaining:
        assert r.hget(keys.message(msg_id), "status") == "delivered"
    assert gauge(r) == stored_by_state(r)


def lua_receipt_if_present(r, msg_id: str, at: float) -> None:
    outbox.RECORD_RECEIPT(r, msg_id=msg_id, status="delivered", at=f"{at:.6f}")  # 0 once pruned


def test_the_hourly_task_prunes_in_a_real_worker(r, tmp_path, monkeypatch):
    now = time.time()
    old = accept(r, 5, now - 40 * DAY)
    sent(r, old, now - 40 * DAY)
    keep = accept(r, 2, now - 40 * DAY)
    monkeypatch.setenv("WAORCH_MESSAGE_RETENTION", str(int(RETENTION)))
    with CeleryWorker(tmp_path, queues="maintenance", concurrency=1):
        from tasks.maintenance import prune_messages

        prune_messages.delay()
        wait_for(lambda: r.zcard(keys.MESSAGES_ALL) == 2, "the old sent messages pruned", timeout=60)
    assert all(gone(r, i) for i in old) and all(messages.get_message(r, i) for i in keep)
