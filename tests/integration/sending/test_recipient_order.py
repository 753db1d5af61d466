"""Per-recipient send order on a real Redis: a person gets a tenant's messages in the order they
were accepted, whatever order dispatch routed them in and whichever session sends them."""

from __future__ import annotations

import queue
import random
import statistics
import threading
import time

import pytest

from tests.support.waiting import wait_for
from waorch.core import keys, settings
from waorch.messages import records as messages
from waorch.policy.pacing import Pace
from waorch.sending import accept as acceptance
from waorch.sending import outbox

A, A_PHONE = "sa", "12025550181"
B, B_PHONE = "sb", "12025550182"
TO, OTHER = "14155550123", "14155550999"
PACE = Pace(per_minute=60, jitter=0)  # one claim per second exactly: deterministic gates


def accept(r, *to: str, tenant: str = "t1", **fields) -> list[str]:
    """One accept call (one batch) with a message to each of `to`, in that order."""
    records = [{"id": acceptance.new_message_id(), "to": phone, "text": f"text {i}", **fields}
               for i, phone in enumerate(to)]
    acceptance.store(r, tenant, records, {})
    return [rec["id"] for rec in records]


def route(r, ids: list[str], session: str = A, phone: str = A_PHONE, now: float = 100.0) -> None:
    for msg_id in ids:
        assert outbox.route(r, msg_id, session, phone, now=now)
    outbox.reserve_slots(r, session, phone, PACE, now=now)


def claimed_id(r, session: str, now: float) -> str | None:
    res = outbox.claim(r, session, PACE, now=now)
    return res.message["id"] if res.outcome == "claimed" else None


def send(r, session: str, now: float) -> str:
    """Claim and ACK; the id sent."""
    res = outbox.claim(r, session, PACE, now=now)
    assert res.outcome == "claimed", res
    assert outbox.ack(r, session, res.message["id"], res.message["lease_token"], f"wa-{now}",
                      now=now) == "ok"
    return res.message["id"]


def drain(r, session: str, now: float, n: int) -> list[str]:
    """Claim and ACK `n` messages as soon as the scripts allow; the ids in send order."""
    sent = []
    while len(sent) < n:
        res = outbox.claim(r, session, PACE, now=now)
        if res.outcome == "claimed":
            sent.append(res.message["id"])
            outbox.ack(r, session, sent[-1], res.message["lease_token"], f"wa-{now}", now=now)
        else:
            assert res.outcome == "wait" and res.ready_at > now, res
            now = res.ready_at
    return sent


def status(r, msg_id: str) -> str:
    return r.hget(keys.message(msg_id), "status")


def test_routed_in_reverse_they_still_go_in_acceptance_order(r):
    m1, m2, m3 = (accept(r, TO)[0] for _ in range(3))
    route(r, [m3, m2, m1])  # slots: m3 at 100, m2 at 101, m1 at 102
    first = outbox.claim(r, A, PACE, now=100.0)
    # m3 is due but waits for m1 and m2; the answer brings the worker back by m2's slot
    assert first.outcome == "wait" and 100.0 < first.ready_at <= 101.0
    assert r.hget(keys.session_pacing(A), "next_claim") is None  # skipping took no pacing slot
    assert outbox.claim(r, A, PACE, now=101.0).outcome == "wait"
    assert [send(r, A, 102.0), send(r, A, 103.0), send(r, A, 104.0)] == [m1, m2, m3]
    assert not r.exists(keys.recipient_pending("t1", TO))  # nothing left pending


def test_a_waiting_message_does_not_hold_other_recipients(r):
    m1, m2 = accept(r, TO)[0], accept(r, TO)[0]
    [x1] = accept(r, OTHER)
    route(r, [m1, m2, x1])
    assert claimed_id(r, A, 100.0) == m1  # not sent yet: m2 must wait for it
    assert claimed_id(r, A, 102.0) == x1  # m2 (due at 101) is passed over, not consumed
    assert status(r, m2) == "scheduled"
    assert claimed_id(r, A, 103.0) is None


def test_a_failed_message_releases_the_next_and_a_retry_holds_it(r, monkeypatch):
    monkeypatch.setenv("WAORCH_MAX_ATTEMPTS", "2")
    settings.get.cache_clear()
    m1, m2, m3 = (accept(r, TO)[0] for _ in range(3))
    route(r, [m1, m2, m3])
    c1 = outbox.claim(r, A, PACE, now=100.0)
    assert outbox.nack(r, A, m1, c1.message["lease_token"], "timeout", True, now=100.5) == "retry"
    # m1 retries after 5 s: m2 and m3 wait for it rather than overtake it
    assert claimed_id(r, A, 102.0) is None
    c1b = outbox.claim(r, A, PACE, now=106.0)
    assert c1b.message["id"] == m1
    assert outbox.nack(r, A, m1, c1b.message["lease_token"], "timeout", True, now=106.5) == "failed"
    assert send(r, A, 107.0) == m2
    assert send(r, A, 108.0) == m3


def test_a_batch_goes_in_list_order(r):
    batch = accept(r, TO, OTHER, TO, TO)
    seqs = [int(r.hget(keys.message(i), "accept_seq")) for i in batch]
    assert seqs == sorted(seqs)
    mine = [batch[0], batch[2], batch[3]]
    route(r, list(reversed(batch)))
    sent = drain(r, A, 100.0, 4)
    assert [i for i in sent if i in mine] == mine


def test_order_holds_across_sessions(r):
    """An explicit `from` may put the same person's messages on two numbers: still in order."""
    [m1] = accept(r, TO)
    [m2] = accept(r, TO)
    route(r, [m2], B, B_PHONE)
    route(r, [m1], A, A_PHONE, now=150.0)
    held = outbox.claim(r, B, PACE, now=149.0)
    assert held.outcome == "wait" and held.ready_at == pytest.approx(150.0)  # re-checked soon
    assert send(r, A, 150.0) == m1
    assert send(r, B, 150.5) == m2


def test_an_explicit_from_is_its_own_lane(r):
    """Messages that name different senders land in different WhatsApp chats: one number's
    spent budget must not hold another's messages to the same person."""
    [a1] = accept(r, TO, from_requested=A_PHONE)
    [b1] = accept(r, TO, from_requested=B_PHONE)
    [a2] = accept(r, TO, from_requested=A_PHONE)
    route(r, [a2, a1], A, A_PHONE, now=500.0)  # A's are due late (its budget, say)
    route(r, [b1], B, B_PHONE)
    assert send(r, B, 100.0) == b1
    assert drain(r, A, 500.0, 2) == [a1, a2]


def test_an_unrouted_predecessor_holds_until_it_fails(r):
    [m1] = accept(r, TO)
    [m2] = accept(r, TO)
    route(r, [m2])
    assert claimed_id(r, A, 100.0) is None
    assert outbox.fail(r, m1, "no_session", "no usable session")
    assert send(r, A, 100.5) == m2


def test_an_expired_predecessor_elsewhere_fails_instead_of_holding(r):
    [m1] = accept(r, TO, expires_at=120)
    [m2] = accept(r, TO)
    route(r, [m1], A, A_PHONE)  # a session that never claims (its worker is gone)
    route(r, [m2], B, B_PHONE)
    assert claimed_id(r, B, 110.0) is None
    assert send(r, B, 130.0) == m2
    assert status(r, m1) == "failed" and r.hget(keys.message(m1), "reason") == "expired"
    assert r.zscore(keys.session_outbox(A), m1) is None
    assert outbox.claim(r, A, PACE, now=131.0).outcome == "empty"


def test_many_waiting_messages_of_one_person_do_not_starve_another(r):
    """150 due messages behind an unrouted one, then one to someone else: still found."""
    [first] = accept(r, TO)
    stuck = [accept(r, TO)[0] for _ in range(150)]
    [x1] = accept(r, OTHER)
    for msg_id in stuck + [x1]:
        outbox.route(r, msg_id, A, A_PHONE, now=0.0)
    while outbox.reserve_slots(r, A, A_PHONE, Pace(per_minute=60000, jitter=0), now=0.0):
        pass
    assert claimed_id(r, A, 10.0) == x1
    res = outbox.claim(r, A, PACE, now=20.0)
    assert res.outcome == "wait" and res.ready_at == pytest.approx(21.0)  # no busy loop
    assert status(r, first) == "queued"


def test_off_is_the_old_behaviour(r, monkeypatch):
    monkeypatch.setenv("WAORCH_RECIPIENT_ORDER", "off")
    settings.get.cache_clear()
    m1, m2 = accept(r, TO)[0], accept(r, TO)[0]
    route(r, [m2, m1])
    assert claimed_id(r, A, 100.0) == m2


def test_concurrent_accepts_routes_and_claims_keep_each_persons_order(r, monkeypatch):
    """Threads accept (single and batch), route in shuffled order to two sessions, claim, ACK,
    sometimes NACK: each person gets the sends in acceptance order, no message is claimed twice
    at once, and every message ends sent or failed."""
    monkeypatch.setenv("WAORCH_RETRY_BASE", "0.05")
    monkeypatch.setenv("WAORCH_MAX_ATTEMPTS", "3")
    settings.get.cache_clear()
    people = [f"1415555{n:04d}" for n in range(5)]
    fast = Pace(per_minute=60000, jitter=0.3)  # ~1 ms gap: many claims race
    to_route: queue.Queue[str] = queue.Queue()
    accepted: list[str] = []
    violations: list[str] = []
    sent_by_person: dict[str, list[str]] = {p: [] for p in people}
    in_flight: set[str] = set()
    lock = threading.Lock()
    done_accepting = threading.Event()
    stop = threading.Event()

    def acceptor(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            batch = [rng.choice(people) for _ in range(rng.choice([1, 1, 3]))]
            ids = accept(r, *batch)
            with lock:
                accepted.extend(ids)
            for msg_id in rng.sample(ids, len(ids)):  # dispatch order differs from acceptance
                to_route.put(msg_id)

    def router(seed: int) -> None:
        rng = random.Random(seed)
        while not (done_accepting.is_set() and to_route.empty()):
            held: list[str] = []
            try:
                held = [to_route.get(timeout=0.05)]
                while len(held) < rng.randint(1, 3):
                    held.append(to_route.get_nowait())
            except queue.Empty:
                if not held:
                    continue
            for msg_id in reversed(held):
                session, phone = rng.choice([(A, A_PHONE), (B, B_PHONE)])
                outbox.route(r, msg_id, session, phone)
                outbox.reserve_slots(r, session, phone, fast)

    def claimer(session: str, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            res = outbox.claim(r, session, fast, now=time.time())
            if res.outcome != "claimed":
                time.sleep(0.002)
                continue
            msg_id, person = res.message["id"], res.message["to"]
            seq = int(r.hget(keys.message(msg_id), "accept_seq"))
            with lock:
                if msg_id in in_flight:
                    violations.append(f"{msg_id} claimed twice at once")
                in_flight.add(msg_id)
                earlier = [i for i in accepted if r.hget(keys.message(i), "to") == person
                           and int(r.hget(keys.message(i), "accept_seq")) < seq]
            # terminal is forever: every earlier message must already have ended when this went
            open_ones = [i for i in earlier if status(r, i) not in messages.TERMINAL]
            if open_ones:
                violations.append(f"{msg_id} claimed while {open_ones} were pending")
            roll = rng.random()
            with lock:
                in_flight.discard(msg_id)
            if roll < 0.1:
                outbox.nack(r, session, msg_id, res.message["lease_token"], "timeout", True, now=time.time())
            elif roll < 0.15:
                outbox.nack(r, session, msg_id, res.message["lease_token"], "rejected", False)
            else:
                with lock:  # recorded before the ACK: the next one cannot be claimed before it
                    sent_by_person[person].append(msg_id)
                assert outbox.ack(r, session, msg_id, res.message["lease_token"], "wa") == "ok"

    acceptors = [threading.Thread(target=acceptor, args=(i,)) for i in range(4)]
    workers = [threading.Thread(target=router, args=(10 + i,)) for i in range(3)]
    workers += [threading.Thread(target=claimer, args=(s, 20 + i)) for i, s in enumerate([A, A, B, B])]
    for t in acceptors + workers:
        t.start()
    for t in acceptors:
        t.join()
    done_accepting.set()
    try:
        wait_for(lambda: all(status(r, i) in messages.TERMINAL for i in accepted),
                 "every message sent or failed", timeout=120)
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert violations == []
    assert len(accepted) > 100
    for person, sent in sent_by_person.items():
        seqs = [int(r.hget(keys.message(i), "accept_seq")) for i in sent]
        assert seqs == sorted(seqs), person
        assert len(sent) == len(set(sent))
        assert {i for i in accepted if r.hget(keys.message(i), "to") == person
                and status(r, i) == "sent"} == set(sent)
    assert not any(r.exists(keys.recipient_pending("t1", p)) for p in people)
    routed_late = 0  # messages routed after a later-accepted one to the same person
    for msg_id in accepted:
        steps = messages.history(r, msg_id)
        names = [h["status"] for h in steps]
        assert ("claimed", "claimed") not in set(zip(names, names[1:], strict=False)), names
        routed_at = next(h["at"] for h in steps if h["status"] == "routed")
        seq, person = int(r.hget(keys.message(msg_id), "accept_seq")), r.hget(keys.message(msg_id), "to")
        routed_late += any(int(r.hget(keys.message(o), "accept_seq")) > seq and
                           r.hget(keys.message(o), "to") == person and
                           next(h["at"] for h in messages.history(r, o) if h["status"] == "routed")
                           < routed_at for o in accepted)
    assert routed_late > 5  # the test did route out of order


def _claim_micros(r, order: str, reverse: bool, monkeypatch) -> float:
    """Median µs of a claim of a session with 200 due messages to 20 people; routed in acceptance
    order (the usual case) or all reversed (each person's first message is last in the outbox)."""
    monkeypatch.setenv("WAORCH_RECIPIENT_ORDER", order)
    settings.get.cache_clear()
    r.flushdb()
    people = [f"1415556{n:04d}" for n in range(20)]
    ids = accept(r, *(people * 10))
    for msg_id in reversed(ids) if reverse else ids:
        outbox.route(r, msg_id, A, A_PHONE, now=0.0)
    while outbox.reserve_slots(r, A, A_PHONE, Pace(per_minute=60000, jitter=0), now=0.0):
        pass
    samples = []
    now = 10.0
    for _ in range(190):
        started = time.perf_counter()
        res = outbox.claim(r, A, PACE, now=now)
        samples.append((time.perf_counter() - started) * 1e6)
        assert res.outcome == "claimed"
        assert outbox.ack(r, A, res.message["id"], res.message["lease_token"], "wa", now=now) == "ok"
        now += 1.0
    return statistics.median(samples)


def test_claim_cost_with_and_without_the_order_check(r, monkeypatch, capsys):
    cost = {(order, reverse): _claim_micros(r, order, reverse, monkeypatch)
            for reverse in (False, True) for order in ("off", "on", "off", "on")}
    with capsys.disabled():
        print(f"\nclaim median µs (200 due, 20 people): in order: on {cost['on', False]:.0f} / "
              f"off {cost['off', False]:.0f}; routed reversed: on {cost['on', True]:.0f} / "
              f"off {cost['off', True]:.0f}")
    # a few extra reads per claim in the usual case; the reversed case is bounded by the scan
    assert cost["on", False] < cost["off", False] * 3 + 500
