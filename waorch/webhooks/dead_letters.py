"""Client events that ran out of retries: listing per tenant and redelivery."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import redis

from waorch.core import keys, lua, settings, zset_pages
from waorch.webhooks import events as client_events

REDELIVER = lua.Script("webhooks/redeliver", args=("dead_letter_id", "tenant", "now", "ttl", "due"))

class DeadLetterGone(RuntimeError):
    """Its subscription was deleted (or the event itself expired): nowhere to redeliver it."""


class WebhookDisabled(RuntimeError):
    """Its subscription is disabled (the endpoint answered 410 Gone): enable it first."""


def public_view(record: dict[str, str]) -> dict[str, Any]:
    try:
        event = json.loads(record.get("event") or "null")
    except ValueError:
        event = None
    return {
        "id": record["id"], "tenant": record.get("tenant"), "webhook_id": record.get("subscription"),
        "url": record.get("url"), "event_id": record.get("event_id"), "event": event,
        "attempts": int(record.get("attempts") or 0), "last_error": record.get("last_error") or None,
        "queued_at": float(record["queued_at"]) if record.get("queued_at") else None,
        "dead_at": float(record["dead_at"]) if record.get("dead_at") else None,
    }


def list_dead_letters(r: redis.Redis, tenant: str | None, cursor: str | None = None,
                      limit: int = 50) -> tuple[list[dict], str | None]:
    """Newest first; pass the returned cursor back for the next page."""
    index = keys.tenant_dead_letters(tenant) if tenant else keys.DEAD_LETTERS_ALL
    ids = list(itertools.islice(zset_pages.newest_first(r, index, cursor, chunk=limit), limit))
    pipe = r.pipeline(transaction=False)
    for dl_id, _ in ids:
        pipe.hgetall(keys.dead_letter(dl_id))
    items = [public_view(rec) for rec in pipe.execute() if rec.get("id")]
    next_cursor = zset_pages.cursor_after(*ids[-1]) if len(ids) == limit else None
    return items, next_cursor


def redeliver(r: redis.Redis, dl_id: str, tenant: str | None) -> bool:
    """Queue the event again (a fresh retry window); False when unknown or another tenant's."""
    if not isinstance(dl_id, str) or not dl_id or len(dl_id) > 80:
        return False
    tenant_of, sub_id = r.hmget(keys.dead_letter(dl_id), "tenant", "subscription")
    if tenant is not None and tenant_of != tenant:
        return False
    if sub_id and r.hget(keys.client_webhook(sub_id), "disabled_at"):
        raise WebhookDisabled("its webhook is disabled (its endpoint answered 410 Gone); "
                              "enable it first: POST /api/webhooks/<id>/enable")
    now = time.time()
    ttl = int(settings.get().webhook_retry_window + client_events.EVENT_TTL_MARGIN)
    result = REDELIVER(r, dead_letter_id=dl_id, tenant=tenant or "", now=f"{now:.3f}", ttl=ttl,
                       due=f"{now + client_events.DIRECT_GRACE:.3f}")
    if result[0] == "unknown":
        return False
    if result[0] == "gone":
        raise DeadLetterGone("its webhook was deleted; the event cannot be redelivered")
    client_events.publish([result[1]] if result[1] else [])
    return True
