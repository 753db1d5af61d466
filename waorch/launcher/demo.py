"""`waorch run --demo`: the demo proxies in the inventory and a few sandbox sessions."""

from __future__ import annotations

import logging

import redis

from waorch.fleet import lifecycle
from waorch.launcher.plan import DEMO_PROXY_USER, Endpoints
from waorch.proxies.pool import ProxyPool, redact
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

# Valid numbers in the North American fictional 555-01xx range: they belong to nobody.
DEMO_PHONES = ("12025550101", "12025550102")


def proxy_urls(endpoints: Endpoints, password: str) -> list[str]:
    return [f"socks5h://{DEMO_PROXY_USER}:{password}@{host}:{port}" for host, port in endpoints.proxies]


def bootstrap(r: redis.Redis, endpoints: Endpoints, socks_password: str, tenant: str) -> list[str]:
    """Add the demo proxies and sessions (a re-run finds them already there); notes to print."""
    notes = []
    pool = ProxyPool(r)
    for url in proxy_urls(endpoints, socks_password):
        _, added = pool.add(url)
        notes.append(f"demo proxy {redact(url)} {'added' if added else 'already in the inventory'}")
    for phone in DEMO_PHONES:
        try:
            session = lifecycle.create_session(r, tenant, phone, label="demo")
        except sessions.SessionExists as exc:
            # A re-run: the session is kept, and made to run again if it had been stopped.
            lifecycle.restart_session(r, exc.session_id, reason="waorch run --demo")
            notes.append(f"demo session {exc.session_id} (+{phone}) restarted")
            continue
        except (lifecycle.NoProxyCapacity, ValueError) as exc:
            notes.append(f"demo session +{phone} not created: {exc}")
            continue
        notes.append(f"demo session {session['id']} (+{phone}) created; the simulator pairs it")
    return notes
