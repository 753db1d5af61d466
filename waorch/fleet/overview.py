"""What the dashboard needs beyond the resource APIs: per-session queue depths and sends, queue
totals, recent messages and failures; read from Redis in a few pipelined round trips.

Bounded whatever the fleet's size: queue totals come from the message state counters that
lib/message.lua keeps, the per-session figures for one page of sessions (SSCAN of sessions:all,
`limit` at a time, resumed by `cursor`)."""

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
SESSIONS_PAGE = 500  # sessions per page by default (the dashboard shows this many loads)
SESSIONS_PAGE_MAX = 1000
FAILURES_SHOWN = 20
DAY = 86400.0
_MESSAGE_FIELDS = ("id", "status", "reason", "to", "sender", "from_requested", "session", "text",
                   "attempts", "created_at", "updated_at", "tenant")
_PREVIEW = 80


def session_page(r: redis.Redis, cursor: int = 0, limit: int = SESSIONS_PAGE) -> tuple[list[str], int]:
    """About `limit` session ids from `cursor` (SSCAN order) and the cursor of the rest (0: none)."""
    found: list[str] = []
    while True:
        cursor, ids = r.sscan(keys.SESSIONS_ALL, cursor=cursor, count=limit)
        found += ids
        if cursor == 0 or len(found) >= limit:
            return sorted(found), cursor


def session_load(r: redis.Redis, now: float, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Per session of `ids` (default: the first page): messages routed (waiting for a slot),
    scheduled, claimed, and sends in 24 h."""
    if ids is None:
        ids, _ = session_page(r)
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


def queue_totals(r: redis.Redis) -> dict[str, Any]:
    """Fleet-wide depths: unrouted messages, messages routed/scheduled/claimed (the state counters
    of lib/message.lua, not a walk over the sessions), Celery queues, dead letters."""
    # kombu keeps each Celery queue as a Redis LIST named after it
    queues = [queue.name for queue in celeryconfig.task_queues]
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.MESSAGES_UNROUTED)
    pipe.hmget(keys.METRICS_MESSAGE_STATES, "routed", "scheduled", "claimed")
    for name in queues:
        pipe.llen(name)
    pipe.hlen(CELERY_UNACKED)
    pipe.zcard(keys.DEAD_LETTERS_ALL)
    unrouted, states, *celery, unacked, dead = pipe.execute()
    routed, scheduled, claimed = (max(0, int(n or 0)) for n in states)
    return {
        "unrouted": unrouted,
        "routed": routed,
        "scheduled": scheduled,
        "claimed": claimed,
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


def overview(r: redis.Redis, now: float | None = None, cursor: int = 0,
             limit: int = SESSIONS_PAGE) -> dict[str, Any]:
    """Everything the dashboard shows that no resource endpoint gives, with the server's time:
    the per-session figures of one page of sessions (`sessions_cursor` resumes: null at the end)."""
    now = time.time() if now is None else now
    ids, next_cursor = session_page(r, cursor, max(1, min(limit, SESSIONS_PAGE_MAX)))
    recent, failures = recent_messages(r)
    return {"now": now, "sessions": session_load(r, now, ids), "sessions_total": r.scard(keys.SESSIONS_ALL),
            "sessions_cursor": next_cursor or None, "queues": queue_totals(r),
            "recent_messages": recent, "recent_failures": failures}
