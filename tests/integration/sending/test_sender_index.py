"""The per-tenant sender index (sessions:sendable:<tenant>, lua_scripts/lib/sendable.lua) on a real
Redis: exact after every kind of change, also under concurrent changes, corrected where a script
that may not know of it changed a budget, and the batch router that reads it."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from tests.support.waiting import wait_for
from waorch.core import keys, redis_client, settings
from waorch.fleet import lifecycle, worker_events
from waorch.messages import records as messages
from waorch.policy import bursts, suppressions, trust
from waorch.policy import rules as policy
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions

POLICY = {**FAST_POLICY, "trust_levels": {"restricted": {"per_minute": 60, "per_day": 20},
                                          "new": {"per_minute": 120, "per_day": 100},
                                          "trusted": {"per_minute": 120, "per_day": 1000}},
          # no demand bursts unless a test asks for one
          "bursts": {"demand_factor": 1000}}
TIER = 1e9


@pytest.fixture(autouse=True)
def policy_in_force(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, POLICY)


def expected_ranks(r, tenant: str, now: float | None = None) -> dict[str, float]:
    """The rank of each live session of `tenant`, computed from scratch from its records."""
    now = time.time() if now is None else now
    pol = policy.get()
    after = settings.get().reroute_after_pause
    ranks = {}
    for sid in r.smembers(sessions.tenant_sessions_key(tenant)):
        s = r.hgetall(keys.session(sid))
        if not s or s.get("status") in sessions.DEAD_STATUSES:
            continue
        used = r.zcount(keys.session_sendlog(sid), f"({now - 86400:.6f}", "+inf")
        waiting = r.llen(keys.session_queue(s["phone"])) + r.zcard(keys.session_outbox(sid))
        spare = pol.level(s.get("trust_level")).per_day - used - waiting
        paused = float(s.get("paused_until") or 0)
        cooldown = float(r.hget(keys.session_pacing(sid), "cooldown_until") or 0)
        ready = s["status"] == "connected" and s.get("desired") == "active" and paused <= now
        healthy = ready and cooldown <= now
        waits_less = paused - now <= after
        ranks[sid] = (4 * healthy + 2 * ready + waits_less) * TIER + spare
    return ranks


def stored_ranks(r, tenant: str) -> dict[str, float]:
    return dict(r.zrange(keys.sendable_sessions(tenant), 0, -1, withscores=True))


def sender_of(r, msg_id: str) -> str:
    return r.hget(keys.message(msg_id), "session")


def route(r, to: str, tenant: str = "acme", **fields) -> str:
    [msg] = accept(r, tenant, to, 1, **fields)
    assert dispatching.dispatch_batch(r, [msg]) == {"routed": 1}, messages.get_message(r, msg)
    return msg


def test_every_kind_of_change_keeps_the_index_exact(r):
    dispatching.ensure_indexes(r)
    a = connected_session(r, "acme", "12025550101")
    b = connected_session(r, "acme", "12025550102", trust_level="trusted")
    c = lifecycle.create_session(r, "acme", "12025550103")  # starting: live, not ready
    other = connected_session(r, "other", "12025550104")
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    assert stored_ranks(r, "other") == expected_ranks(r, "other") == {other["id"]: 7 * TIER + 100}
    for i in range(3):  # routing: one less to spare each
        route(r, f"1415555020{i}")
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    assert stored_ranks(r, "acme")[b["id"]] == 7 * TIER + 997
    # a pause (WhatsApp RESTRICTED: also the `restricted` level), a trust change, a cooldown
    worker_events.apply(r, a["id"], "RESTRICTED", {"until": time.time() + 7200}, time.time())
    assert stored_ranks(r, "acme")[a["id"]] == 0 * TIER + 20  # paused long, restricted budget
    trust.set_level(r, b["id"], "new", "test")
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    bursts.JUDGE_DEMAND(r, queue=keys.session_queue(b["phone"]), outbox=keys.session_outbox(b["id"]),
                        leases=keys.session_leases(b["id"]), pacing=keys.session_pacing(b["id"]),
                        now=f"{time.time():.6f}", threshold=0, cooldown=600, session_id=b["id"])
    assert stored_ranks(r, "acme")[b["id"]] // TIER == 3  # ready, waits less, not healthy
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    # connecting, disconnecting, stopping, banning, deleting
    worker_events.apply(r, c["id"], "CONNECTED", {"jid": "x@s.whatsapp.net"}, time.time())
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    worker_events.apply(r, c["id"], "PING", {"connected": False}, time.time())
    assert stored_ranks(r, "acme")[c["id"]] // TIER == 1
    lifecycle.stop_session(r, c["id"], reason="test")
    assert c["id"] not in stored_ranks(r, "acme")
    worker_events.apply(r, b["id"], "ERROR", {"code": "BANNED"}, time.time())
    assert set(stored_ranks(r, "acme")) == {a["id"]}
    lifecycle.delete_session(r, a["id"])
    assert stored_ranks(r, "acme") == {} and r.zcard(keys.sendable_due("acme")) == 0


def test_the_index_stays_exact_under_concurrent_changes_and_routing(redis_url, r):
    dispatching.ensure_indexes(r)
    fleet = [connected_session(r, "acme", f"1202555{i:04d}") for i in range(12)]
    errors: list[BaseException] = []
    stop = threading.Event()
    far = time.time() + 86400  # pauses that cannot end during the test

    def changer(seed: int) -> None:
        rng = random.Random(seed)
        client = redis_client.get_redis(redis_url)
        try:
            while not stop.is_set():
                s = rng.choice(fleet)
                action = rng.randrange(5)
                if action == 0:
                    connected = rng.random() < 0.6
                    worker_events.apply(client, s["id"], "PING", {"connected": connected}, time.time())
                elif action == 1:
                    sessions.transition(client, s["id"], fields={
                        "paused_until": f"{far:.3f}" if rng.random() < 0.5 else ""})
                elif action == 2:
                    trust.set_level(client, s["id"], rng.choice(["new", "trusted", "restricted"]), "test")
                elif action == 3:
                    sessions.transition(client, s["id"], desired=rng.choice(["active", "stopped"]))
                else:  # a demand burst: cooldown (threshold 0 judges any pending work a burst)
                    bursts.JUDGE_DEMAND(
                        client, queue=keys.session_queue(s["phone"]), outbox=keys.session_outbox(s["id"]),
                        leases=keys.session_leases(s["id"]), pacing=keys.session_pacing(s["id"]),
                        now=f"{time.time():.6f}", threshold=0, cooldown=600, session_id=s["id"])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def router(seed: int) -> None:
        client = redis_client.get_redis(redis_url)
        try:
            for round_ in range(8):
                people = [f"1415{seed}{round_:02d}{i:03d}" for i in [0, *range(15)]]  # one twice
                ids = [m for to in people for m in accept(client, "acme", to, 1)]
                dispatching.dispatch_batch(client, ids)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    changers = [threading.Thread(target=changer, args=(i,)) for i in range(3)]
    routers = [threading.Thread(target=router, args=(i,)) for i in range(3)]
    for t in changers + routers:
        t.start()
    for t in routers:
        t.join(timeout=300)
    stop.set()
    for t in changers:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in changers + routers)
    stored = stored_ranks(r, "acme")
    assert stored == expected_ranks(r, "acme")
    assert len({rank // TIER for rank in stored.values()}) > 1  # the changes left several tiers
    routed = r.hget(keys.METRICS_MESSAGE_STATES, "routed")
    assert int(routed or 0) + int(r.hget(keys.METRICS_MESSAGE_STATES, "scheduled") or 0) == 3 * 8 * 16


def test_a_budget_used_behind_the_index_is_corrected_where_it_is_read(r):
    dispatching.ensure_indexes(r)
    a = connected_session(r, "acme", "12025550111")  # 100/day
    b = connected_session(r, "acme", "12025550112")  # 100/day
    first = route(r, "14155550300")  # the larger id wins a tie
    assert sender_of(r, first) == max(a["id"], b["id"])
    leader = sender_of(r, first)
    follower = a["id"] if leader == b["id"] else b["id"]
    assert sender_of(r, route(r, "14155550301")) == follower  # 100 beats 99; then 99 each
    # claims that the index never heard of (as sending/claim.lua makes them): 5 for the leader
    now = time.time()
    r.zadd(keys.session_sendlog(leader), {f"x{i}:1": now - i for i in range(5)})
    stale = stored_ranks(r, "acme")[leader]
    third = route(r, "14155550302")
    assert sender_of(r, third) == follower  # the leader's entry was re-read and found lower
    assert stored_ranks(r, "acme")[leader] == stale - 5
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")


def test_a_pause_that_ends_is_caught_up_before_choosing(r):
    dispatching.ensure_indexes(r)
    small = connected_session(r, "acme", "12025550121")  # 100/day
    big = connected_session(r, "acme", "12025550122", trust_level="trusted")
    until = time.time() + 1.5
    sessions.transition(r, big["id"], fields={"paused_until": f"{until:.3f}"})
    assert r.zscore(keys.sendable_due("acme"), big["id"]) == pytest.approx(until, abs=0.01)
    assert sender_of(r, route(r, "14155550400")) == small["id"]
    wait_for(lambda: time.time() > until + 0.05, "the end of the pause", timeout=5, interval=0.05)
    assert sender_of(r, route(r, "14155550401")) == big["id"]  # nothing told the index: its due time
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")


def test_sticky_from_and_fallback_rules(r):
    dispatching.ensure_indexes(r)
    a = connected_session(r, "acme", "12025550131")
    b = lifecycle.create_session(r, "acme", "12025550132")  # never connected
    assert sender_of(r, route(r, "14155550510")) == a["id"]
    # explicit `from` may name a session that is not connected yet; another tenant's phone: no
    assert sender_of(r, route(r, "14155550500", from_requested=b["phone"])) == b["id"]
    other = connected_session(r, "other", "12025550133")
    [foreign] = accept(r, "acme", "14155550501", 1, from_requested=other["phone"])
    assert dispatching.dispatch_batch(r, [foreign]) == {"failed": 1}
    assert messages.get_message(r, foreign)["reason"] == "no_session"
    # the sticky sender paused long: a new number takes the person over...
    worker_events.apply(r, a["id"], "RESTRICTED", {"until": time.time() + 7200}, time.time())
    moved = route(r, "14155550510")
    assert sender_of(r, moved) == b["id"]
    assert messages.history(r, moved)[1]["detail"] == "session not connected yet (no connected one)"
    # ...unless every live session is paused long: then the person stays with their number
    lifecycle.delete_session(r, b["id"])
    r.set(keys.sticky_sender("acme", "14155550502"), a["id"])
    c = connected_session(r, "acme", "12025550134")
    worker_events.apply(r, c["id"], "RESTRICTED", {"until": time.time() + 7200}, time.time())
    assert sender_of(r, route(r, "14155550502")) == a["id"]


def test_one_batch_routes_a_persons_messages_to_one_sender_and_counts_outcomes(r):
    dispatching.ensure_indexes(r)
    fleet = [connected_session(r, "acme", f"1202555014{i}") for i in range(4)]
    same = accept(r, "acme", "14155550600", 3)
    expired = accept(r, "acme", "14155550601", 1, expires_at=f"{time.time() - 1:.3f}")
    suppressions.add(r, "acme", "14155550602", reason="test")
    opted_out = accept(r, "acme", "14155550602", 1)
    nobody = accept(r, "lonely", "14155550603", 1)
    already = accept(r, "acme", "14155550604", 1)
    assert dispatching.dispatch_batch(r, already) == {"routed": 1}
    counts = dispatching.dispatch_batch(r, same + expired + opted_out + nobody + already + ["nope"])
    assert counts == {"routed": 3, "failed": 3, "skip": 1, "unknown": 1}
    assert len({sender_of(r, m) for m in same}) == 1
    reasons = {messages.get_message(r, m)["reason"] for m in expired + opted_out + nobody}
    assert reasons == {"expired", "suppressed", "no_session"}
    # each session with new work got its slots in the same call (scheduled, not waiting for the pump)
    assert {messages.get_message(r, m)["status"] for m in same} == {"scheduled"}
    assert r.zcard(keys.SESSIONS_PUMP_DUE) == 0
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    assert {s["id"] for s in fleet} == set(stored_ranks(r, "acme"))


def test_a_redis_from_before_the_index_is_indexed_on_first_dispatch(r):
    a = connected_session(r, "acme", "12025550151")
    b = connected_session(r, "acme", "12025550152", trust_level="trusted")
    [queued] = accept(r, "acme", "14155550700", 1)
    assert outbox.route(r, queued, a["id"], a["phone"])
    # what a Redis of the previous version holds: no index keys at all
    r.delete(keys.SENDABLE_CONF, keys.sendable_sessions("acme"), keys.sendable_due("acme"),
             keys.SESSIONS_PUMP_DUE, keys.SESSIONS_LAST_PING, keys.LEASES_DUE)
    assert sender_of(r, route(r, "14155550701")) == b["id"]
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme")
    assert r.zscore(keys.SESSIONS_PUMP_DUE, a["id"]) is not None  # its routed message waits for slots
    assert set(r.zrange(keys.SESSIONS_LAST_PING, 0, -1)) == {a["id"], b["id"]}


def test_a_long_list_is_routed_in_several_calls_in_order(r, monkeypatch):
    dispatching.ensure_indexes(r)
    monkeypatch.setattr(dispatching, "BATCH_LIMIT", 7)
    fleet = [connected_session(r, "acme", f"1202555016{i}") for i in range(3)]
    ids = [m for i in range(30) for m in accept(r, "acme", f"14155508{i:02d}", 1)]
    again = [m for _ in range(3) for m in accept(r, "acme", "1415550800", 1)]  # the first person
    assert dispatching.dispatch_batch(r, ids + again + ids[:2]) == {"routed": 33, "skip": 2}
    assert {sender_of(r, m) for m in [ids[0], *again]} == {sender_of(r, ids[0])}
    # planned in order of routing: a person's later message never gets the earlier slot
    slots = [float(r.hget(keys.message(m), "scheduled_for")) for m in [ids[0], *again]]
    assert slots == sorted(slots)
    assert stored_ranks(r, "acme") == expected_ranks(r, "acme") and len(fleet) == 3
