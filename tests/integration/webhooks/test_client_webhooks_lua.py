"""Client event queues on a real Redis: emit, per-lane order, lane lock release, dead letters,
redelivery and the subscription cap, including concurrent callers."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.support.lua_alone import lua_dead_letter_lane
from waorch.core import keys, settings
from waorch.webhooks import dead_letters
from waorch.webhooks import delivery as webhook_delivery
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"


@pytest.fixture
def allow_loopback(redis_url, monkeypatch):
    monkeypatch.setenv("WAORCH_WEBHOOK_ALLOWLIST", "127.0.0.1/32")
    settings.get.cache_clear()


def subscribe(r, events=None, tenant=TENANT, port=9) -> str:
    view, _ = client_webhooks.create(r, tenant, f"http://127.0.0.1:{port}/h", events, "s" * 20)
    return view["id"]


def lane_entries(r, sub, key) -> list[str]:
    lane = client_events.lane_for(key)
    return [e.split(" ")[0] for e in r.lrange(keys.webhook_lane(sub, lane), 0, -1)]


def test_emit_without_subscriptions_stores_nothing(r):
    event = client_events.new_event("evt_1", "session.status", {"x": 1})
    assert client_events.emit(r, TENANT, "s1", [event]) == "ok"
    assert not r.exists(keys.client_event("evt_1"))
    assert r.zcard(keys.WEBHOOKS_DUE) == 0


def test_emit_queues_per_subscription_by_type_and_wakes_only_empty_lanes(r, allow_loopback):
    everything = subscribe(r)
    sessions_only = subscribe(r, ["session.status"])
    lane = client_events.lane_for("s1")
    def emit(eid: str, typ: str) -> list:
        return client_events.EMIT_EVENTS(r, tenant=TENANT, lane=lane, now="100.0", ttl=60, due="160.0",
                                         seq_key="", expected_seq=0, new_seq=0, mark="", order_key="s1",
                                         events=[eid, typ, json.dumps({"id": eid})])

    woken = emit("evt_a", "session.status")
    assert woken[0] == "ok"
    assert sorted(woken[1:]) == sorted([f"{everything}:{lane}", f"{sessions_only}:{lane}"])
    woken = emit("evt_b", "message.inbound")
    assert woken == ["ok"]  # the lane was not empty: its delivery task is already on the way
    assert lane_entries(r, everything, "s1") == ["evt_a", "evt_b"]
    assert lane_entries(r, sessions_only, "s1") == ["evt_a"]
    assert json.loads(r.get(keys.client_event("evt_b"))) == {"id": "evt_b"}
    assert 0 < r.ttl(keys.client_event("evt_b")) <= 60
    assert r.zscore(keys.WEBHOOKS_DUE, f"{everything}:{lane}") == 160.0


def test_message_events_follow_the_history_once_each(r, allow_loopback):
    sub = subscribe(r)
    msg = "m1"
    r.hset(keys.message(msg), mapping={"id": msg, "tenant": TENANT, "to": "14155550123", "status": "queued"})
    for status in ("queued", "routed", "scheduled", "claimed", "sent"):
        r.rpush(keys.message_history(msg), json.dumps({"status": status, "at": time.time()}))
    assert client_events.message_changed(r, msg) == 1
    assert client_events.message_changed(r, msg) == 0  # nothing new
    for status in ("delivered", "read"):
        r.rpush(keys.message_history(msg), json.dumps({"status": status, "at": time.time()}))
    assert client_events.message_changed(r, msg) == 2
    ids = lane_entries(r, sub, msg)
    assert ids == [f"evt_{msg}_4", f"evt_{msg}_5", f"evt_{msg}_6"]
    statuses = [json.loads(r.get(keys.client_event(i)))["data"]["status"] for i in ids]
    assert statuses == ["sent", "delivered", "read"]


def test_concurrent_emitters_emit_each_transition_once_in_order(r, allow_loopback):
    sub = subscribe(r)
    msg = "m2"
    r.hset(keys.message(msg), mapping={"id": msg, "tenant": TENANT, "status": "sent"})
    statuses = ["sent", "delivered", "read"] * 10
    stop = threading.Event()

    def writer():
        for status in statuses:
            r.rpush(keys.message_history(msg), json.dumps({"status": status, "at": time.time()}))
            client_events.message_changed(r, msg)
        stop.set()

    def racer():
        while not stop.is_set():
            client_events.message_changed(r, msg)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=racer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client_events.message_changed(r, msg)
    assert lane_entries(r, sub, msg) == [f"evt_{msg}_{i}" for i in range(len(statuses))]


def test_emit_of_a_vanished_message_is_a_conflict_not_a_new_record(r, allow_loopback):
    subscribe(r)
    result = client_events.EMIT_EVENTS(r, tenant=TENANT, lane=0, now="1.0", ttl=60, due="1.0",
                                       seq_key=keys.message("gone"), expected_seq=0, new_seq=1,
                                       mark="msg:gone", order_key="gone",
                                       events=["evt_x", "message.status", "{}"])
    assert result == ["conflict"] and not r.exists(keys.message("gone"))


def test_lane_pop_only_pops_its_own_head(r, allow_loopback):
    sub = subscribe(r)
    lane = keys.webhook_lane(sub, 3)
    r.rpush(lane, "evt_1 1.0", "evt_2 2.0")
    r.hset(keys.webhook_lane_state(sub, 3), mapping={"attempts": 2})
    def pop(entry: str) -> int:
        return webhook_delivery.POP_LANE(r, sub_id=sub, lane=3, entry=entry, now="5", order_key="")

    assert pop("evt_2 2.0") == 0
    assert pop("evt_1 1.0") == 1
    assert r.lrange(lane, 0, -1) == ["evt_2 2.0"] and not r.exists(keys.webhook_lane_state(sub, 3))
    assert r.hget(keys.client_webhook(sub), "delivered") == "1"


def test_release_leaves_the_due_set_only_when_the_lane_is_empty(r, allow_loopback):
    sub = subscribe(r)
    def release(token: str, due: str) -> str:
        return webhook_delivery.RELEASE_LANE(r, sub_id=sub, lane=0, token=token, due=due)

    r.set(keys.webhook_lane_lock(sub, 0), "tok")
    r.zadd(keys.WEBHOOKS_DUE, {f"{sub}:0": 1})
    assert release("other", "9") == "idle"
    assert r.get(keys.webhook_lane_lock(sub, 0)) == "tok"  # not ours: kept
    assert r.zscore(keys.WEBHOOKS_DUE, f"{sub}:0") is None
    r.rpush(keys.webhook_lane(sub, 0), "evt_1 1.0")
    assert release("tok", "42") == "more"
    assert not r.exists(keys.webhook_lane_lock(sub, 0))
    assert r.zscore(keys.WEBHOOKS_DUE, f"{sub}:0") == 42


def test_dead_letter_moves_only_events_past_their_window(r, allow_loopback):
    sub = subscribe(r)
    now = time.time()
    r.set(keys.client_event("evt_old1"), json.dumps({"id": "evt_old1"}))
    r.rpush(keys.webhook_lane(sub, 1), f"evt_old1 {now - 100}", f"evt_old2 {now - 90}", f"evt_new {now - 1}")
    moved = lua_dead_letter_lane(r, sub, 1, now, window=50, attempts=7, error="HTTP 500", id_prefix="dl_t_",
                                 most=100)
    assert moved == 2
    assert [e.split(" ")[0] for e in r.lrange(keys.webhook_lane(sub, 1), 0, -1)] == ["evt_new"]
    items, cursor = dead_letters.list_dead_letters(r, TENANT)
    assert cursor is None and {i["event_id"] for i in items} == {"evt_old1", "evt_old2"}
    head = next(i for i in items if i["event_id"] == "evt_old1")
    assert head["attempts"] == 7 and head["last_error"] == "HTTP 500" and head["event"] == {"id": "evt_old1"}
    assert dead_letters.list_dead_letters(r, "other")[0] == []
    assert len(dead_letters.list_dead_letters(r, None)[0]) == 2


def test_redeliver_happens_once_under_concurrency_and_only_for_the_tenant(r, allow_loopback):
    sub = subscribe(r)
    now = time.time()
    r.set(keys.client_event("evt_1"), json.dumps({"id": "evt_1"}))
    r.rpush(keys.webhook_lane(sub, 2), f"evt_1 {now - 100}")
    lua_dead_letter_lane(r, sub, 2, now, window=10, attempts=3, error="refused", id_prefix="dl_c_")
    r.delete(keys.client_event("evt_1"))  # the event record expired meanwhile: the letter has a copy
    assert dead_letters.redeliver(r, "dl_c_0", "other") is False
    results = []
    threads = [threading.Thread(target=lambda: results.append(dead_letters.redeliver(r, "dl_c_0", TENANT)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert [e.split(" ")[0] for e in r.lrange(keys.webhook_lane(sub, 2), 0, -1)] == ["evt_1"]
    assert json.loads(r.get(keys.client_event("evt_1"))) == {"id": "evt_1"}
    assert r.get(keys.client_event_refs("evt_1")) == "1"
    assert dead_letters.list_dead_letters(r, TENANT)[0] == []


def test_redeliver_to_a_deleted_webhook_is_refused(r, allow_loopback):
    sub = subscribe(r)
    now = time.time()
    r.set(keys.client_event("evt_1"), "{}")
    r.rpush(keys.webhook_lane(sub, 2), f"evt_1 {now - 100}")
    lua_dead_letter_lane(r, sub, 2, now, window=10, attempts=3, error="refused", id_prefix="dl_g_")
    assert client_webhooks.delete(r, sub, TENANT)
    with pytest.raises(dead_letters.DeadLetterGone):
        dead_letters.redeliver(r, "dl_g_0", TENANT)
    assert len(dead_letters.list_dead_letters(r, TENANT)[0]) == 1  # still listed


def test_subscription_cap_holds_under_concurrent_creates(r, allow_loopback):
    errors = []

    def create():
        try:
            subscribe(r)
        except client_webhooks.TooManyWebhooks:
            errors.append(1)

    threads = [threading.Thread(target=create) for _ in range(client_webhooks.MAX_PER_TENANT + 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(client_webhooks.list_for(r, TENANT)) == client_webhooks.MAX_PER_TENANT and len(errors) == 5
    assert len(client_webhooks.list_for(r, "other")) == 0


def test_unsubscribe_drops_queued_events_and_due_lanes(r, allow_loopback):
    sub = subscribe(r)
    client_events.emit(r, TENANT, "s1", [client_events.new_event("evt_1", "session.status", {})])
    assert r.zcard(keys.WEBHOOKS_DUE) == 1
    assert client_webhooks.delete(r, sub, "other") is False
    assert client_webhooks.delete(r, sub, TENANT) is True
    assert r.zcard(keys.WEBHOOKS_DUE) == 0 and not r.keys("webhook:lane:*")
    assert client_webhooks.get(r, sub) is None and client_webhooks.list_for(r, None) == []


def test_claim_due_hands_out_due_lanes_once_per_grace(r, allow_loopback):
    sub = subscribe(r)
    now = time.time()
    r.zadd(keys.WEBHOOKS_DUE, {f"{sub}:1": now - 1, f"{sub}:2": now + 100})
    assert webhook_delivery.claim_due(r, now) == [(sub, 1)]
    assert webhook_delivery.claim_due(r, now) == []
    assert webhook_delivery.claim_due(r, now + webhook_delivery.SWEEP_GRACE + 1) == [(sub, 1)]


def test_secret_is_stored_sealed(r, allow_loopback):
    view, generated = client_webhooks.create(r, TENANT, "http://127.0.0.1:9/h")
    assert generated.startswith("whsec_") and "secret" not in view
    stored = r.hget(keys.client_webhook(view["id"]), "secret")
    assert generated not in stored and client_webhooks.unseal(stored) == generated


def test_an_event_record_lives_while_a_lane_holds_it(r, allow_loopback):
    first, second = subscribe(r), subscribe(r)
    client_events.emit(r, TENANT, "s1", [client_events.new_event("evt_1", "session.status", {})])
    client_events.emit(r, TENANT, "s2", [client_events.new_event("evt_2", "session.status", {})])
    lane1 = client_events.lane_for("s1")
    assert r.get(keys.client_event_refs("evt_1")) == "2"
    entry = r.lindex(keys.webhook_lane(first, lane1), 0)
    assert webhook_delivery.POP_LANE(r, sub_id=first, lane=lane1, entry=entry, now="1", order_key="") == 1
    assert r.exists(keys.client_event("evt_1"))  # the second subscription still needs it
    entry = r.lindex(keys.webhook_lane(second, lane1), 0)
    lua_dead_letter_lane(r, second, lane1, time.time() + 10, window=1, attempts=1, error="x",
                         id_prefix="dl_r_")
    assert not r.exists(keys.client_event("evt_1"), keys.client_event_refs("evt_1"))
    assert dead_letters.list_dead_letters(r, TENANT)[0][0]["event"]["id"] == "evt_1"  # its own copy
    assert r.exists(keys.client_event("evt_2"))
    client_webhooks.delete(r, first, TENANT)
    client_webhooks.delete(r, second, TENANT)
    assert not r.exists(keys.client_event("evt_2"), keys.client_event_refs("evt_2"))
