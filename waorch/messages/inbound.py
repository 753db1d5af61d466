"""Inbound messages a session received (stored by waorch.fleet.worker_events), newest first."""

from __future__ import annotations

import json
import math
from typing import Any

import redis

from waorch.core import keys


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def clean(entry: dict[str, Any]) -> dict[str, Any]:
    """An inbound entry with the types clients are promised (workers report what they like)."""
    at = entry.get("at")
    finite = isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at)
    media = entry.get("media")
    return {"session": _text(entry.get("session")), "to": _text(entry.get("to")),
            "from": _text(entry.get("from")), "text": _text(entry.get("text")) or "",
            "wa_id": _text(entry.get("wa_id")), "at": float(at) if finite else None,
            "media": media if isinstance(media, dict) else None}


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
            items.append(clean(entry))
    return items, offset + limit if len(raw) > limit else None
