"""What the dashboard needs beyond the resource APIs: per-session queue depths and sends, queue
totals, recent messages and failures; read from Redis in a few pipelined round trips."""

from __future__ import annotations

import time
from typing import Any

import redis

import celeryconfig
from waorch.core import keys
from waorch.messages import records as messages

CELERY_UNACKED = "unacked"  # kombu's HASH of delivered, not yet acknowledged tasks
RECENT_SCANNED = 500  # newest messages looked at for the recent lists (bounded work per poll)
RECENT_SHOWN = 10
FAILURES_SHOWN = 20
DAY = 86400.0
_MESSAGE_FIELDS = ("id", "status", "reason", "to", "sender", "from_requested", "session", "text",
                   "attempts", "created_at", "updated_at", "tenant")
_PREVIEW = 80


def session_load(r: redis.Redis, now: float) -> list[dict[str, Any]]:
    """Per session: messages routed (waiting for a slot), scheduled, claimed, and sends in 24 h."""
    ids = sorted(r.smembers(keys.SESSIONS_ALL))
    pipe = r.pipeline(transaction=False)
    for sid in ids:
        pipe.hget(keys.session(sid), "phone")
    phones = pipe.execute()
    pipe = r.pipeline(transaction=False)
    for sid, phone in zip(ids, phones, strict=True):
        pipe.llen(keys.session_queue(phone or ""))
        pipe.zcard(keys.session_outbox(sid))
        pipe.zcard(keys.session_leases(sid))
        # the send log holds claims of the last 24 h: the window of the per-day budget
        pipe.zcount(keys.session_sendlog(sid), f"({now - DAY:.6f}", "+inf")
    counts = pipe.execute()
    found = []
    for index, (sid, phone) in enumerate(zip(ids, phones, strict=True)):
        if phone is None:  # deleted between the two reads
            continue
        routed, scheduled, claimed, sends = counts[index * 4:index * 4 + 4]
        found.append({"id": sid, "routed": routed, "scheduled": scheduled, "claimed": claimed,
                      "queue_depth": routed + scheduled + claimed, "sends_24h": sends})
    return found


def queue_totals(r: redis.Redis, per_session: list[dict[str, Any]]) -> dict[str, Any]:
    """Fleet-wide depths: unrouted messages, session queues, Celery queues, dead letters."""
    # kombu keeps each Celery queue as a Redis LIST named after it
    queues = [queue.name for queue in celeryconfig.task_queues]
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.MESSAGES_UNROUTED)
    for name in queues:
        pipe.llen(name)
    pipe.hlen(CELERY_UNACKED)
    pipe.zcard(keys.DEAD_LETTERS_ALL)
    unrouted, *celery, unacked, dead = pipe.execute()
    return {
        "unrouted": unrouted,
        "routed": sum(s["routed"] for s in per_session),
        "scheduled": sum(s["scheduled"] for s in per_session),
        "claimed": sum(s["claimed"] for s in per_session),
        "celery": dict(zip(queues, celery, strict=True)),
        "celery_unacked": unacked,
        "dead_letters": dead,
    }


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    view = messages.public_view({k: v for k, v in record.items() if v is not None})
    text = view.pop("text") or ""
    view.pop("media", None)
    view["text_preview"] = text if len(text) <= _PREVIEW else text[:_PREVIEW - 1] + "…"
    return view


def recent_messages(r: redis.Redis) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The newest messages and, among the newest RECENT_SCANNED, the failed ones (newest first)."""
    ids = r.zrevrange(keys.MESSAGES_ALL, 0, RECENT_SCANNED - 1)
    pipe = r.pipeline(transaction=False)
    for msg_id in ids:
        pipe.hmget(keys.message(msg_id), _MESSAGE_FIELDS)
    recent, failures = [], []
    for values in pipe.execute():
        record = dict(zip(_MESSAGE_FIELDS, values, strict=True))
        if not record["id"]:  # expired or deleted since the index was read
            continue
        if len(recent) < RECENT_SHOWN:
            recent.append(_brief(record))
        if record["status"] == "failed" and len(failures) < FAILURES_SHOWN:
            failures.append(_brief(record))
    return recent, failures


def overview(r: redis.Redis, now: float | None = None) -> dict[str, Any]:
    """Everything the dashboard shows that no resource endpoint gives, with the server's time."""
    now = time.time() if now is None else now
    per_session = session_load(r, now)
    recent, failures = recent_messages(r)
    return {"now": now, "sessions": per_session, "queues": queue_totals(r, per_session),
            "recent_messages": recent, "recent_failures": failures}
