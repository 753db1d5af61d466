"""The suppression list: recipients a tenant must not message again (opt-outs, operator entries).

Key: suppressions:<tenant> HASH phone (E.164 digits) -> JSON {reason, source, at}. The pacing
scripts read the same hash (lib/pacing.lua `suppressed`), so a suppression stops messages that
were already scheduled, at their claim.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from waorch.core import keys

MAX_REASON = 200


def add(r: redis.Redis, tenant: str, phone: str, reason: str = "", source: str = "api",
        at: float | None = None) -> tuple[dict[str, Any], bool]:
    """Suppress `phone` for `tenant`; (the record, True if new). An existing entry is kept as it was."""
    record = {"phone": phone, "reason": (reason or "")[:MAX_REASON], "source": source[:100],
              "at": time.time() if at is None else at}
    created = bool(r.hsetnx(keys.suppressions(tenant), phone, json.dumps(record, sort_keys=True)))
    return (record if created else get(r, tenant, phone) or record), created


def remove(r: redis.Redis, tenant: str, phone: str) -> bool:
    """Lift a suppression; False when there was none."""
    return bool(r.hdel(keys.suppressions(tenant), phone))


def get(r: redis.Redis, tenant: str, phone: str) -> dict[str, Any] | None:
    raw = r.hget(keys.suppressions(tenant), phone)
    return _parse(phone, raw) if raw else None


def is_suppressed(r: redis.Redis, tenant: str, phone: str) -> bool:
    return bool(r.hexists(keys.suppressions(tenant), phone))


def suppressed_among(r: redis.Redis, tenant: str, phones: list[str]) -> set[str]:
    """Which of `phones` the tenant may not message."""
    if not phones:
        return set()
    unique = list(dict.fromkeys(phones))
    pipe = r.pipeline(transaction=False)
    for phone in unique:
        pipe.hexists(keys.suppressions(tenant), phone)
    return {phone for phone, hit in zip(unique, pipe.execute(), strict=True) if hit}


def list_page(r: redis.Redis, tenant: str, cursor: int = 0,
              limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the tenant's suppressions (HSCAN order) and the cursor of the next, if any."""
    items: list[dict[str, Any]] = []
    while True:
        cursor, found = r.hscan(keys.suppressions(tenant), cursor=cursor, count=limit)
        items += [_parse(phone, raw) for phone, raw in found.items()]
        if cursor == 0 or len(items) >= limit:
            return sorted(items, key=lambda i: (i["at"], i["phone"])), (cursor or None)


def count(r: redis.Redis, tenant: str) -> int:
    return int(r.hlen(keys.suppressions(tenant)))


def _parse(phone: str, raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    return {"phone": phone, "reason": data.get("reason", ""), "source": data.get("source", ""),
            "at": data.get("at")}
