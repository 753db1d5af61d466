"""`waorch run --demo`: demo proxies in the inventory and a few sandbox sessions."""

from __future__ import annotations

import threading

import redis

from waorch.launcher.plan import DEMO_PROXY_USER, Endpoints


def proxy_urls(endpoints: Endpoints, password: str) -> list[str]:
    return [f"socks5h://{DEMO_PROXY_USER}:{password}@{host}:{port}" for host, port in endpoints.proxies]


def bootstrap(r: redis.Redis, endpoints: Endpoints, socks_password: str, demo: bool,
              stop: threading.Event) -> list[str]:
    """Add demo proxies and sessions (when the building blocks exist); returns notes to print."""
    if not demo:
        return []
    return ["demo proxies and sessions are not available in this build yet"]
