"""Shared fixtures: every test run gets its own real redis-server on a free port."""

from __future__ import annotations

import os
import sys

import pytest
import redis

from waorch.core import redis_client, settings
from waorch.launcher.redis_server import start_local_redis
from waorch.metrics import http as http_metrics

# Before anything is collected (importing app or celeryconfig reads them): code that is not given
# a test's Redis must fail, never fall back to the machine's shared redis://127.0.0.1:6379; and
# gateway request metrics are written by the request itself, never later into another test's Redis.
os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
os.environ["WAORCH_METRICS_FLUSH"] = "0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server owned by this test run (never the machine's shared one)."""
    server = start_local_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server, monkeypatch) -> str:
    """URL of a freshly flushed database, also exported as REDIS_URL for code under test."""
    url = redis_server.url
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("WAORCH_SECRET_KEY", os.environ.get("WAORCH_SECRET_KEY", "test-master-key"))
    settings.get.cache_clear()
    redis_client.reset_clients()
    http_metrics.TALLY.discard()  # counts a request to an earlier test's Redis could not write
    # celeryconfig read REDIS_URL once, when first imported: follow this test's Redis, also for a
    # Celery app imported only later in the test
    config = sys.modules.get("celeryconfig")
    if config is not None:
        config.broker_url = url
    celery_module = sys.modules.get("tasks.celery_app")
    if celery_module is not None:
        celery_module.use_broker(url)
    yield url
    settings.get.cache_clear()
    redis_client.reset_clients()


@pytest.fixture
def r(redis_url) -> redis.Redis:
    """Decoded client on the test database."""
    return redis_client.get_redis(redis_url)


def _missing(message: str) -> None:
    """Skip a test whose machine setup is missing; under CI nothing the product claims may skip."""
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL for this test run (never the machine's own server)."""
    from tests.support.postgres_server import PostgresUnavailable, start_postgres

    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        _missing(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server):
    """PgBouncer in transaction pooling in front of `postgres_server` (lib/pq needs
    binary_parameters=yes behind it: see tests/support/postgres_server.py)."""
    from tests.support.postgres_server import PostgresUnavailable, start_pgbouncer

    try:
        bouncer = start_pgbouncer(postgres_server, pool_mode="transaction")
    except PostgresUnavailable as exc:
        _missing(str(exc))
    yield bouncer
    bouncer.stop()


@pytest.fixture
def sentinel_setup():
    """A fresh Redis primary, replica and three sentinels (tests/support/sentinel.py); fresh per
    test because tests kill its primary."""
    from tests.support.sentinel import start_sentinel_setup

    setup = start_sentinel_setup()
    yield setup
    setup.stop()
