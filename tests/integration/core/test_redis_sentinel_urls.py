"""A Sentinel REDIS_URL across a kill -9 of the primary: a client built from the URL writes again
within a deadline, and Celery configured from the same URL publishes, and a real worker consumes,
before and after the failover."""

from __future__ import annotations

import time

import redis
from celery import Celery

from tests.support import sentinel_celery_app as probe
from tests.support.celery_worker import CeleryWorker
from tests.support.sentinel import start_sentinel_setup
from tests.support.waiting import wait_for
from waorch.core.redis_urls import celery_broker_settings, redis_client_for

RECOVERY_DEADLINE = 60.0


def write_until_it_works(client: redis.Redis, key: str, deadline: float) -> tuple[int, int]:
    """INCR `key` until one succeeds; returns (failed attempts, the value written)."""
    failures = 0
    end = time.monotonic() + deadline
    while True:
        try:
            return failures, client.incr(key)
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            failures += 1
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_client_from_sentinel_url_writes_again_after_kill_9(sentinel_setup):
    client = redis_client_for(sentinel_setup.url(db=3))
    try:
        assert client.set("greeting", "hello")
        assert client.wait(1, 5000) == 1
        before = client.connection_pool.get_master_address()
        assert before == ("127.0.0.1", sentinel_setup.primary.port)

        sentinel_setup.kill_primary()
        # redis-py retries a failed command itself (10 times, backoff up to 1 s), so a short
        # failover may not even reach this loop
        _, value = write_until_it_works(client, "counter", RECOVERY_DEADLINE)

        # the same client object now talks to the promoted replica, db 3, and sees the old data
        assert client.connection_pool.get_master_address() == ("127.0.0.1", sentinel_setup.replica.port)
        assert value == 1
        assert client.get("greeting") == "hello"
        direct = redis.Redis(port=sentinel_setup.replica.port, db=3, decode_responses=True)
        assert direct.get("counter") == "1"
        direct.close()
    finally:
        client.close()


def test_password_url_client_follows_the_failover(tmp_path):
    with start_sentinel_setup(tmp_path / "s", password="pw-with:@chars") as setup:
        url = setup.url().replace("pw-with:@chars", "pw-with%3A%40chars")
        client = redis_client_for(url)
        try:
            client.set("k", "v")
            assert client.wait(1, 5000) == 1
            setup.kill_primary()
            write_until_it_works(client, "n", RECOVERY_DEADLINE)
            assert client.get("k") == "v"
        finally:
            client.close()


def test_celery_publishes_and_a_worker_consumes_before_and_after_failover(sentinel_setup, tmp_path,
                                                                          monkeypatch):
    url = sentinel_setup.url(db=1)
    monkeypatch.setenv("REDIS_URL", url)
    observer = redis_client_for(url)
    publisher_app = Celery("publisher", set_as_current=False)
    publisher_app.conf.update(**celery_broker_settings(url, {"visibility_timeout": 300}))
    worker = CeleryWorker(tmp_path, queues=probe.QUEUE, concurrency=1, env={"REDIS_URL": url},
                          app="tests.support.sentinel_celery_app")
    try:
        worker.start()
        publisher_app.send_task("probe.record", args=["before"], queue=probe.QUEUE)
        wait_for(lambda: "before" in observer.lrange(probe.DONE_KEY, 0, -1), "the task before the failover",
                 timeout=RECOVERY_DEADLINE)
        assert observer.wait(1, 5000) == 1

        killed_at = sentinel_setup.kill_primary()
        sentinel_setup.wait_for_new_primary(killed_at, timeout=RECOVERY_DEADLINE)
        # the publisher's pooled connection went to the dead primary: kombu must find the new one
        publisher_app.send_task("probe.record", args=["after"], queue=probe.QUEUE)

        def done() -> list[str]:
            try:
                return observer.lrange(probe.DONE_KEY, 0, -1)
            except redis.ConnectionError:
                return []

        wait_for(lambda: "after" in done(), "the worker to consume the task published after the failover",
                 timeout=RECOVERY_DEADLINE)
        assert done() == ["before", "after"]  # each exactly once
        # the same worker process lived through the failover: it lost the primary and reconnected
        assert "Connection to broker lost" in worker.log()
        assert worker.process.poll() is None
    finally:
        worker.stop()
        observer.close()
        publisher_app.close()
