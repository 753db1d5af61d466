"""Parked claim long-polls over real HTTP are woken by notifications, not by polling Redis:
prompt when work is routed, only for their own session, and still served when a wake-up is lost."""

from __future__ import annotations

import json
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.waiting import wait_for
from waorch.core import keys, settings, signing
from waorch.policy.pacing import pace_for
from waorch.sending import accept, claim_wakeup, outbox


@pytest.fixture
def wakeup_mode(redis_url, monkeypatch):
    """Set the claim wake-up settings the in-process gateway reads on each request."""
    def use(mode: str, recheck: float = 60) -> None:
        monkeypatch.setenv("WAORCH_CLAIM_WAKEUP", mode)
        monkeypatch.setenv("WAORCH_CLAIM_RECHECK", str(recheck))
        settings.get.cache_clear()
        if mode == "notify":
            assert claim_wakeup.wait_live(redis_url), "the wake-up subscriber did not subscribe"
    return use


def make_session(r, i: int) -> tuple[str, str, str]:
    """A registered session (no worker process): its id, phone and worker secret."""
    sid, phone, salt = f"wk{i}{secrets.token_hex(3)}", f"4915100{i:05d}", secrets.token_hex(8)
    r.hset(keys.session(sid), mapping={"id": sid, "tenant": "acme", "phone": phone,
                                       "status": "connected", "salt": salt, "trust_level": "new"})
    r.sadd(keys.SESSIONS_ALL, sid)
    claim_wakeup.rechecks.pop(sid, None)
    return sid, phone, signing.derive_secret(settings.get().secret_key, f"session:{sid}:{salt}")


def claim_over_http(gateway, session: tuple[str, str, str], wait: float) -> requests.Response:
    sid, _, secret = session
    body = json.dumps({"session_id": sid, "nonce": secrets.token_hex(8), "wait": wait}).encode()
    headers = {"Content-Type": "application/json", **signing.sign_headers(secret, body)}
    return requests.post(f"{gateway.url}/api/worker/sessions/{sid}/outbox/claim", data=body,
                         headers=headers, timeout=wait + 30)


def routed_message(r, session: tuple[str, str, str]) -> str:
    """Accept a message and route it to the session's FIFO (no send slot yet: not claimable)."""
    sid, phone, _ = session
    msg_id = accept.new_message_id()
    # a recipient of its own: the per-recipient protections must not hold it back
    to = f"1415{secrets.randbelow(10**7):07d}"
    accept.store(r, "acme", [{"id": msg_id, "to": to, "text": "hi"}], {"ids": [msg_id]})
    assert outbox.route(r, msg_id, sid, phone)
    return msg_id


def park(pool: ThreadPoolExecutor, gateway, redis_url, session, wait: float):
    future = pool.submit(claim_over_http, gateway, session, wait)
    wait_for(lambda: claim_wakeup.parked(redis_url, session[0]) == 1 or future.done(),
             f"claim of {session[0]} parked", timeout=30, interval=0.01)
    assert not future.done(), future.result().status_code
    return future


def test_routed_message_wakes_its_parked_claim_at_once(gateway, r, redis_url, wakeup_mode):
    wakeup_mode("notify", recheck=60)  # no safety re-check inside this test: only the wake-up
    latencies = []
    with ThreadPoolExecutor(4) as pool:
        for i in range(5):
            session = make_session(r, i)
            future = park(pool, gateway, redis_url, session, wait=20)
            msg_id = routed_message(r, session)
            started = time.monotonic()
            assert outbox.reserve_slots(r, session[0], session[1], pace_for({"trust_level": "new"})) == 1
            res = future.result(timeout=40)
            latencies.append(time.monotonic() - started)
            assert res.status_code == 200 and res.json()["id"] == msg_id
            # one claim on arrival, one after the wake-up: nothing polled Redis in between
            assert claim_wakeup.rechecks[session[0]] == 1
    assert statistics.median(latencies) < 0.4, latencies


def test_idle_parked_claims_do_not_poll_redis(gateway, r, redis_url, wakeup_mode):
    sessions = [make_session(r, 100 + i) for i in range(10)]
    wakeup_mode("notify", recheck=60)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda s: claim_over_http(gateway, s, 3).status_code, sessions))
    assert answers == [204] * 10
    # the only re-check of each is at its deadline (poll mode: about 6 each, see below)
    assert [claim_wakeup.rechecks[s[0]] for s in sessions] == [1] * 10


def test_poll_mode_keeps_the_old_half_second_polling(gateway, r, wakeup_mode):
    session = make_session(r, 200)
    wakeup_mode("poll")
    assert claim_over_http(gateway, session, 3).status_code == 204
    assert claim_wakeup.rechecks[session[0]] >= 4


def test_many_parked_sessions_each_wake_only_for_their_own(gateway, r, redis_url, wakeup_mode):
    wakeup_mode("notify", recheck=60)
    sessions = [make_session(r, 300 + i) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        futures = [park(pool, gateway, redis_url, s, wait=25) for s in sessions]
        first, rest = sessions[:3], sessions[3:]
        for session, future in zip(first, futures, strict=False):
            msg_id = routed_message(r, session)
            outbox.reserve_slots(r, session[0], session[1], pace_for({"trust_level": "new"}))
            res = future.result(timeout=40)
            assert res.status_code == 200 and res.json()["id"] == msg_id
        # three sessions were woken (and answered); the other 17 never ran their claim again
        assert [claim_wakeup.rechecks[s[0]] for s in rest] == [0] * 17
        assert all(not f.done() for f in futures[3:])
        expected = {}
        for session in rest:
            expected[session[0]] = routed_message(r, session)
            outbox.reserve_slots(r, session[0], session[1], pace_for({"trust_level": "new"}))
        for session, future in zip(rest, futures[3:], strict=True):
            res = future.result(timeout=40)
            assert res.status_code == 200 and res.json()["id"] == expected[session[0]]


def test_lost_wake_up_is_covered_by_the_recheck(gateway, r, redis_url, wakeup_mode):
    wakeup_mode("notify", recheck=1)
    session = make_session(r, 400)
    with ThreadPoolExecutor(1) as pool:
        claim_wakeup.notify(r, session[0])  # published before anyone waits: wakes nobody
        future = park(pool, gateway, redis_url, session, wait=20)
        msg_id = routed_message(r, session)
        started = time.monotonic()
        # the slot planner itself, without outbox.reserve_slots' notification: a lost wake-up
        scheduled, _ = outbox.reserve_in_redis(r, session[0], session[1], pace_for({"trust_level": "new"}))
        assert scheduled == 1
        res = future.result(timeout=40)
    assert res.status_code == 200 and res.json()["id"] == msg_id
    assert time.monotonic() - started < 10  # the 1 s re-check, not the 20 s deadline
    assert claim_wakeup.rechecks[session[0]] >= 1


def test_subscriber_reconnect_wakes_every_parked_claim(gateway, r, redis_url, wakeup_mode):
    """Wake-ups published while the subscriber was disconnected are assumed lost."""
    wakeup_mode("notify", recheck=60)
    session = make_session(r, 500)
    with ThreadPoolExecutor(1) as pool:
        future = park(pool, gateway, redis_url, session, wait=20)
        msg_id = routed_message(r, session)
        outbox.reserve_in_redis(r, session[0], session[1], pace_for({"trust_level": "new"}))  # no wake-up
        killed = threading.Event()

        def kill_subscriber():
            for client in r.client_list():
                if "subscribe" in client.get("cmd", "") or int(client.get("sub", 0)) > 0:
                    r.client_kill_filter(_id=client["id"])
                    killed.set()
            return killed.is_set()

        wait_for(kill_subscriber, "the subscriber's connection killed", timeout=10)
        res = future.result(timeout=40)
    assert res.status_code == 200 and res.json()["id"] == msg_id
