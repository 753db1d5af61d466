"""One Redis connection pool per process."""

from __future__ import annotations

import threading

import redis

from waorch.core import redis_urls, settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    """Shared client for `url` (default: REDIS_URL); strings are decoded."""
    url = url or settings.get().redis_url
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis_urls.redis_client_for(url)
                _clients[url] = client
    return client


def reset_clients() -> None:
    """Forget pooled clients (after fork, or when tests switch Redis)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
