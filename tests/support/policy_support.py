"""Helpers for the anti-ban policy tests: a policy file in force, connected sessions, messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from waorch.core import settings
from waorch.fleet import lifecycle, worker_events
from waorch.policy import rules as policy
from waorch.proxies.pool import ProxyPool
from waorch.sending import accept as acceptance
from waorch.sessions import registry as sessions

# Quick budgets so that tests run in seconds; quiet hours and caps off unless a test wants them.
FAST_POLICY = {
    "default_trust_level": "new",
    "trust_levels": {
        "restricted": {"per_minute": 30, "per_day": 20},
        "new": {"per_minute": 120, "per_day": 1000},
        "warming": {"per_minute": 240, "per_day": 2000},
        "trusted": {"per_minute": 600, "per_day": 5000},
    },
    "jitter": 0.3,
    "quiet_hours": None,
    "recipient_daily_cap": None,
}


def use_policy(monkeypatch, directory: Path, document: dict, name: str = "policy.yaml") -> Path:
    """Write `document` as the policy file in force for this process (and children given env)."""
    path = directory / name
    path.write_text(yaml.safe_dump(document) if name.endswith(".yaml") else json.dumps(document))
    monkeypatch.setenv("WAORCH_POLICY_FILE", str(path))
    settings.get.cache_clear()
    policy.reset()
    return path


def connected_session(r, tenant: str, phone: str, trust_level: str | None = None) -> dict:
    """A registered session that reported CONNECTED (no worker process runs for it)."""
    pool = ProxyPool(r)
    if pool.free_slots() < 1:
        pool.add(f"socks5h://u:p@127.0.0.{10 + len(pool.urls())}:1080")
    created = lifecycle.create_session(r, tenant, phone, trust_level)
    worker_events.apply(r, created["id"], "CONNECTED", {"jid": f"{phone}@s.whatsapp.net"},
                                time.time())
    return sessions.get_session(r, created["id"])


def accept(r, tenant: str, to: str, n: int = 1, text: str = "hello", **fields) -> list[str]:
    """Store `n` queued messages for `to` (what POST /api/send does before dispatch)."""
    records = [{"id": acceptance.new_message_id(), "to": to, "text": f"{text} {i}", **fields}
               for i in range(n)]
    acceptance.store(r, tenant, records, {"ids": [rec["id"] for rec in records]})
    return [rec["id"] for rec in records]


def windows_ok(times: list[float], width: float, limit: int) -> tuple[bool, int]:
    """Whether no window (t - width, t] holds more than `limit` of `times`; and the largest count."""
    times = sorted(times)
    worst, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - width:
            start += 1
        worst = max(worst, end - start + 1)
    return worst <= limit, worst
