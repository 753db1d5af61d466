"""Inbound messages a session received (stored by waorch.worker_events), newest first."""

from __future__ import annotations

import json
from typing import Any

import redis

from waorch import keys


def list_inbound(r: redis.Redis, session_id: str, offset: int = 0,
                 limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
    """One page and the offset of the next (None at the end). Offsets shift as messages arrive."""
    raw = r.lrange(keys.session_inbound(session_id), offset, offset + limit)
    items = []
    for text in raw[:limit]:
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if isinstance(entry, dict):
            items.append(entry)
    return items, offset + limit if len(raw) > limit else None
