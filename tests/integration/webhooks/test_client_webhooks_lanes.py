"""One failing message does not hold back the others sharing its delivery lane: its events wait
(in order, with their own backoff) while the lane goes on; once the client accepts them they
arrive in order with their stable ids. Real receiver on 127.0.0.1, real Redis, a real Celery
worker for the end-to-end cases, direct lane runs for the details."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.celery_worker import CeleryWorker
from tests.support.waiting import wait_for
from waorch.core import keys, settings
from waorch.webhooks import dead_letters
from waorch.webhooks import delivery as webhook_delivery
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"
SECRET = "lanes-secret-0123456789"
STATUSES = ("sent", "delivered", "read")


@pytest.fixture
def env(redis_url, monkeypatch, tmp_path):
    for name, value in {"WAORCH_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WAORCH_WEBHOOK_RETRY_BASE": "0.4",
                        "WAORCH_WEBHOOK_RETRY_MAX": "1", "WAORCH_WEBHOOK_TIMEOUT": "2"}.items():
        monkeypatch.setenv(name, value)
    settings.get.cache_clear()
    return tmp_path


def same_lane(first: str, count: int) -> list[str]:
    """`count` message ids that share the delivery lane of `first`."""
    lane = client_events.lane_for(first)
    found = [f"m{i:04d}" for i in range(2000) if client_events.lane_for(f"m{i:04d}") == lane]
    return [m for m in found if m != first][:count]


def emit(r, msg_id: str, *statuses: str, start: int = 0) -> list[str]:
    events = [client_events.new_event(f"evt_{msg_id}_{start + i}", "message.status",
                                      {"message_id": msg_id, "status": status})
              for i, status in enumerate(statuses)]
    assert client_events.emit(r, TENANT, msg_id, events) == "ok"
    return [e["id"] for e in events]


def ids_of(receiver, msg_id: str) -> list[str]:
    return [e["id"] for e in receiver.events() if e["data"]["message_id"] == msg_id]


class Refuser:
    """The receiver's rule: refuse (status, delay) every event of one message until accepted."""

    def __init__(self, msg_id: str, status: int, delay: float = 0.0) -> None:
        self.msg_id, self.status, self.delay = msg_id, status, delay
        self.accepting = threading.Event()
        self.refused: list[str] = []

    def __call__(self, event: dict):
        if event["data"]["message_id"] != self.msg_id or self.accepting.is_set():
            return None
        self.refused.append(event["id"])
        return self.status, self.delay


@pytest.mark.parametrize("status, delay", [(400, 0.0), (503, 4.0)], ids=["refused", "timeout"])
def test_a_failing_message_does_not_hold_back_its_lane(r, env, receiver, status, delay):
    sub = client_webhooks.create(r, TENANT, receiver.url, None, SECRET)[0]["id"]
    failing = "mA"
    others = same_lane(failing, 5)
    refuser = Refuser(failing, status, delay)  # 503 after 4 s: the 2 s timeout runs out first
    receiver.rule = refuser
    with CeleryWorker(env, queues="events"):
        a_ids = emit(r, failing, "sent", "delivered")  # first in the lane
        expected = {m: emit(r, m, *STATUSES) for m in others}
        receiver.wait_for(lambda rc: sum(len(ids_of(rc, m)) for m in others) == 15, 90,
                          "the other messages of the lane")
        assert refuser.refused and set(refuser.refused) == {a_ids[0]}  # only its first event was tried
        for m in others:
            assert ids_of(receiver, m) == expected[m]
        # the lane still flows while the failing message keeps being retried with its own backoff
        tries = len(refuser.refused)
        receiver.wait_for(lambda rc: len(refuser.refused) > tries, 60, "another retry of the failing message")
        a_ids += emit(r, failing, "read", start=2)  # a later event waits behind its own message's
        late = others[0]
        late_ids = emit(r, late, "failed", start=3)
        receiver.wait_for(lambda rc: ids_of(rc, late) == expected[late] + late_ids, 60, "a later message")
        assert ids_of(receiver, failing) == []
        # (the receiver records a delivery before waorch reads its answer and pops it)
        view = wait_for(lambda: (v := client_webhooks.delivery_status(r, client_webhooks.get(r, sub)))
                        ["pending"] == 3 and v, "only the failing message pending", 30)
        assert view["last_error"] and view["failing_since"]
        # the client accepts it now: its events come in order, the first one retried
        refuser.accepting.set()
        receiver.wait_for(lambda rc: len(ids_of(rc, failing)) == 3, 60, "the failing message's events")
        view = wait_for(lambda: (v := client_webhooks.delivery_status(r, client_webhooks.get(r, sub)))
                        ["pending"] == 0 and v, "nothing pending", 30)
    assert ids_of(receiver, failing) == a_ids
    first = next(d for d in receiver.deliveries if d.event["id"] == a_ids[0])
    assert int(first.headers["X-Waorch-Delivery-Attempt"]) == len(refuser.refused) + 1 >= 3
    assert len({d.event["id"] for d in receiver.deliveries}) == len(receiver.deliveries) == 3 + 15 + 1
    assert view["last_error"] is None
    assert dead_letters.list_dead_letters(r, TENANT)[0] == []


def run_lane(r, sub: str, lane: int) -> webhook_delivery.LaneRun:
    run = webhook_delivery.deliver_lane(r, sub, lane)
    assert run.outcome != "busy"
    return run


def test_a_down_endpoint_pauses_the_whole_lane(r, env, receiver):
    sub = client_webhooks.create(r, TENANT, receiver.url, None, SECRET)[0]["id"]
    messages = ["mA", *same_lane("mA", 5)]
    lane = client_events.lane_for("mA")
    for m in messages:
        emit(r, m, "sent")
    receiver.status = 503
    run = run_lane(r, sub, lane)
    # two messages failing in a row: the endpoint is down, not one payload refused
    assert run.outcome == "retry" and receiver.attempts == 2 and 0 < run.retry_in <= 1
    assert run_lane(r, sub, lane).outcome == "retry" and receiver.attempts == 2  # paused
    receiver.status = 200
    deadline = time.monotonic() + 30
    while len(receiver.deliveries) < len(messages):
        assert time.monotonic() < deadline, receiver.attempts
        run = run_lane(r, sub, lane)
        time.sleep(min(run.retry_in or 0, 1.0))
    assert sorted(e["data"]["message_id"] for e in receiver.events()) == sorted(messages)
    assert not r.exists(keys.webhook_lane_state(sub, lane))


def test_only_the_failing_message_is_dead_lettered_at_the_window_end(r, env, receiver, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_RETRY_WINDOW", "1")
    settings.get.cache_clear()
    sub = client_webhooks.create(r, TENANT, receiver.url, None, SECRET)[0]["id"]
    lane = client_events.lane_for("mA")
    refuser = Refuser("mA", 400)
    receiver.rule = refuser
    a_ids = emit(r, "mA", "sent", "delivered")
    [other] = same_lane("mA", 1)
    other_ids = emit(r, other, *STATUSES)
    dead = 0
    deadline = time.monotonic() + 30
    while r.llen(keys.webhook_lane(sub, lane)):
        assert time.monotonic() < deadline
        run = run_lane(r, sub, lane)
        dead += run.dead
        time.sleep(min(run.retry_in or 0, 0.5))
    assert ids_of(receiver, other) == other_ids and ids_of(receiver, "mA") == []
    letters = {i["event_id"]: i for i in dead_letters.list_dead_letters(r, TENANT)[0]}
    assert dead == 2 and sorted(letters) == sorted(a_ids)
    assert letters[a_ids[0]]["attempts"] >= 2 and letters[a_ids[0]]["last_error"] == "HTTP 400"
    assert letters[a_ids[1]]["attempts"] == 0
    # redelivered once the client accepts it: back on the lane with its message, in order
    refuser.accepting.set()
    for event_id in a_ids:
        assert dead_letters.redeliver(r, letters[event_id]["id"], TENANT)
    assert all(e.endswith(" mA") for e in r.lrange(keys.webhook_lane(sub, lane), 0, -1))
    assert run_lane(r, sub, lane).outcome == "idle"
    assert ids_of(receiver, "mA") == a_ids


def test_gone_while_another_message_fails_dead_letters_the_right_attempt(r, env, receiver):
    sub = client_webhooks.create(r, TENANT, receiver.url, None, SECRET)[0]["id"]
    lane = client_events.lane_for("mA")
    receiver.rule = Refuser("mA", 400)
    a_ids = emit(r, "mA", "sent")
    [other] = same_lane("mA", 1)
    other_ids = emit(r, other, "sent")
    receiver.status = 410  # every other message's POST: the endpoint is gone
    run = run_lane(r, sub, lane)
    assert run.outcome == "disabled" and receiver.attempts == 2
    letters = {i["event_id"]: i for i in dead_letters.list_dead_letters(r, TENANT)[0]}
    assert letters[other_ids[0]]["attempts"] == 1 and letters[other_ids[0]]["last_error"] == "HTTP 410 Gone"
    assert "disabled" in letters[a_ids[0]]["last_error"]


def test_pick_keeps_each_entity_in_order():
    entries = ["e1 1 mA", "e2 2 mB", "e3 3 mA", "e4 4 mC", "legacy 5"]
    now = 100.0
    assert webhook_delivery.pick(entries, {}, now) == ("e1 1 mA", now)
    blocked = {"mA": {"next_at": 150.0}, "mB": {"next_at": 120.0}}
    assert webhook_delivery.pick(entries, blocked, now) == ("e4 4 mC", now)
    blocked["mC"] = {"next_at": 130.0}
    blocked["legacy"] = {"next_at": 200.0}
    assert webhook_delivery.pick(entries, blocked, now) == (None, 120.0)
    assert webhook_delivery.pick(entries, blocked, 125.0) == ("e2 2 mB", 125.0)
    assert webhook_delivery.pick(entries, blocked, 160.0)[0] == "e2 2 mB"  # the one due soonest
    assert webhook_delivery.split_entry("legacy 5") == ("legacy", 5.0, "legacy")
