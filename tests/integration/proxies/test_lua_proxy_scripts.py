"""Proxy scripts on a real Redis: stickiness, least-loaded choice, the ceiling under concurrency."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import redis

from waorch.core import keys
from waorch.proxies.pool import ProxyPool, proxy_sessions_key

CEILING = 4


def _pool(r, n: int) -> tuple[ProxyPool, list[str]]:
    pool = ProxyPool(r, ceiling=CEILING)
    for i in range(n):
        pool.add(f"socks5h://127.0.0.{i + 2}:1080")
    return pool, sorted(pool.urls())


def _assert_invariants(r, pool: ProxyPool) -> None:
    for url in pool.urls():
        count = r.scard(proxy_sessions_key(url))
        assert count <= CEILING, url
        assert int(r.get(keys.proxy_counter(url))) == count
        ok = r.get(keys.proxy_status(url)) == "OK"
        assert r.sismember(keys.PROXIES_AVAILABLE, url) == (ok and count < CEILING)


def test_add_is_idempotent_and_makes_the_proxy_available(r):
    pool = ProxyPool(r, ceiling=CEILING)
    view, added = pool.add("socks5h://u:pw@127.0.0.2:1080")
    again, added_again = pool.add("socks5h://u:pw@127.0.0.2:1080")
    assert (added, added_again) == (True, False)
    assert view["status"] == "OK" and view["available"] and view["sessions"] == 0
    assert view["url"] == "socks5h://***:***@127.0.0.2:1080" and again["id"] == view["id"]
    assert r.smembers(keys.PROXIES_AVAILABLE) == {"socks5h://u:pw@127.0.0.2:1080"}


def test_least_loaded_proxy_is_chosen(r):
    pool, urls = _pool(r, 3)
    chosen = [pool.allocate(f"s{i}", f"4915{i:07d}")[1] for i in range(6)]
    assert Counter(chosen) == Counter({u: 2 for u in urls})
    _assert_invariants(r, pool)


def test_sticky_proxy_survives_release_and_is_reused(r):
    pool, urls = _pool(r, 3)
    outcome, first = pool.allocate("s1", "491510000001")
    assert outcome == "ok" and pool.sticky("491510000001") == first
    # load the other proxies less so least-loaded would pick another one
    pool.allocate("s2", "491510000002")
    pool.release("s1", first)
    assert pool.sessions_on(first) == []
    assert pool.sticky("491510000001") == first
    assert pool.allocate("s9", "491510000001") == ("ok", first)
    _assert_invariants(r, pool)


def test_release_is_idempotent(r):
    pool, urls = _pool(r, 1)
    pool.allocate("s1", "491510000001")
    pool.allocate("s2", "491510000002")
    assert pool.release("s1", urls[0]) == 1
    assert pool.release("s1", urls[0]) == 1
    _assert_invariants(r, pool)


def test_ceiling_holds_and_no_capacity_is_reported(r):
    pool, urls = _pool(r, 1)
    outcomes = [pool.allocate(f"s{i}", f"49151000000{i}")[0] for i in range(5)]
    assert outcomes == ["ok"] * 4 + ["none"]
    assert r.smembers(keys.PROXIES_AVAILABLE) == set()
    _assert_invariants(r, pool)


def test_full_sticky_proxy_is_refused_not_swapped(r):
    pool, urls = _pool(r, 2)
    _, sticky = pool.allocate("s0", "491510000000")
    pool.release("s0", sticky)
    for i in range(1, 5):  # strangers fill the phone's proxy while it has no session
        r.sadd(proxy_sessions_key(sticky), f"x{i}")
    r.set(keys.proxy_counter(sticky), 4)
    assert pool.allocate("s5", "491510000000") == ("full", sticky)
    assert pool.sticky("491510000000") == sticky


def test_bad_sticky_proxy_is_replaced_and_mapping_moves(r):
    pool, urls = _pool(r, 2)
    _, first = pool.allocate("s1", "491510000001")
    pool.release("s1", first)
    r.set(keys.proxy_status(first), "BAD")
    outcome, second = pool.allocate("s2", "491510000001")
    assert outcome == "ok" and second != first
    assert pool.sticky("491510000001") == second


def test_leave_moves_a_session_and_updates_its_record(r):
    pool, urls = _pool(r, 2)
    _, first = pool.allocate("s1", "491510000001")
    r.hset(keys.session("s1"), mapping={"id": "s1", "proxy_url": first})
    outcome, second = pool.allocate("s1", "491510000001", leave=first)
    assert outcome == "ok" and second != first
    assert pool.sessions_on(first) == [] and pool.sessions_on(second) == ["s1"]
    assert r.hget(keys.session("s1"), "proxy_url") == second
    assert pool.sticky("491510000001") == second
    _assert_invariants(r, pool)


def test_leave_without_another_proxy_keeps_the_session_where_it_is(r):
    pool, urls = _pool(r, 1)
    _, first = pool.allocate("s1", "491510000001")
    assert pool.allocate("s1", "491510000001", leave=first) == ("none", "")
    assert pool.sessions_on(first) == ["s1"] and pool.sticky("491510000001") == first


def test_report_burns_after_threshold_of_real_checks(r, monkeypatch):
    monkeypatch.setenv("WAORCH_PROXY_FAIL_THRESHOLD", "3")
    from waorch.core import settings

    settings.get.cache_clear()
    pool, urls = _pool(r, 1)
    url = urls[0]
    assert pool.report(url, False, "timed out") == ("OK", "", 1)
    assert pool.report(url, False, "timed out") == ("OK", "", 2)
    assert pool.report(url, False, "timed out") == ("BAD", "burned", 3)
    assert pool.report(url, False, "timed out") == ("BAD", "", 4)
    assert not r.sismember(keys.PROXIES_AVAILABLE, url)
    assert pool.report(url, True) == ("OK", "recovered", 0)
    assert r.sismember(keys.PROXIES_AVAILABLE, url)


def test_worker_evidence_alone_only_makes_a_proxy_suspect(r):
    pool, urls = _pool(r, 1)
    url = urls[0]
    results = [pool.report(url, False, "x", source="worker") for _ in range(4)]
    assert [change for _, change, _ in results] == ["", "", "suspect", "suspect"]
    assert r.get(keys.proxy_status(url)) == "OK"
    # a failing real check confirms it at once: the run of failures is already long enough
    assert pool.report(url, False, "refused")[:2] == ("BAD", "burned")


def test_remove_returns_its_sessions_and_forgets_the_proxy(r):
    pool, urls = _pool(r, 2)
    _, url = pool.allocate("s1", "491510000001")
    assert pool.remove(url) == ["s1"]
    assert url not in pool.urls() and not r.exists(keys.proxy_status(url))
    assert pool.allocate("s2", "491510000001")[1] != url  # the stale sticky mapping is not used


def _allocate_in_process(url: str, worker: int, attempts: int, queue) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    pool = ProxyPool(client, ceiling=CEILING)
    queue.put("ready")
    client.blpop(["test:go"], timeout=60)  # everyone starts together
    queue.put([pool.allocate(f"p{worker}-{i}", f"4916{worker:03d}{i:04d}")[0] for i in range(attempts)])


def test_ceiling_under_many_threads_and_processes(r, redis_url):
    pool, urls = _pool(r, 5)  # 20 slots
    results: list[str] = []
    lock = threading.Lock()

    def thread_worker(n: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        mine = ProxyPool(client, ceiling=CEILING)
        client.blpop(["test:go"], timeout=60)
        got = [mine.allocate(f"t{n}-{i}", f"4917{n:03d}{i:04d}")[0] for i in range(5)]
        with lock:
            results.extend(got)

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_allocate_in_process, args=(redis_url, n, 5, queue)) for n in range(4)]
    threads = [threading.Thread(target=thread_worker, args=(n,)) for n in range(12)]
    for p in processes:
        p.start()
    for t in threads:
        t.start()
    assert [queue.get(timeout=120) for _ in processes] == ["ready"] * len(processes)
    r.rpush("test:go", *["go"] * (len(threads) + len(processes)))
    for t in threads:
        t.join(120)
    for _ in processes:
        results.extend(queue.get(timeout=120))
    for p in processes:
        p.join(60)
    assert len(results) == 16 * 5
    assert results.count("ok") == 20 and results.count("none") == 60
    assert all(r.scard(proxy_sessions_key(u)) == CEILING for u in urls)
    assert r.smembers(keys.PROXIES_AVAILABLE) == set()
    _assert_invariants(r, pool)
