"""Shared fixtures: every test run gets its own real redis-server on a free port."""

from __future__ import annotations

import os
import sys

import pytest
import redis

from waorch import redis_client, settings
from waorch.redis_server import start_local_redis


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
    # request metrics written by the request itself, never later into another test's Redis
    monkeypatch.setenv("WAORCH_METRICS_FLUSH", "0")
    settings.get.cache_clear()
    redis_client.reset_clients()
    # celeryconfig read REDIS_URL once, when first imported: follow this test's Redis
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
