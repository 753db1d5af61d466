"""Dispatch: pick the sender session of a queued message, route it, and reserve send slots."""

from __future__ import annotations

import logging
import time

import redis

from waorch import keys, outbox, sessions
from waorch.pacing import pace_for

log = logging.getLogger("waorch.dispatch")

# Sessions in these states will not send again without an operator.
DEAD_STATUSES = frozenset({"banned", "logged_out", "stopped"})


def _pending(r: redis.Redis, session: dict) -> int:
    d = outbox.depth(r, session["id"], session["phone"])
    return d["queued"] + d["scheduled"] + d["leased"]


def choose_sender(r: redis.Redis, record: dict) -> tuple[dict | None, str]:
    """The session that should send `record`, with why (or None and why not)."""
    tenant = record["tenant"]
    live = [s for s in sessions.list_sessions(r, tenant) if s.get("status") not in DEAD_STATUSES]
    wanted = record.get("from_requested")
    if wanted:
        for session in live:
            if session["phone"] == wanted:
                return session, "requested sender"
        return None, f"no usable session of this tenant for sender {wanted}"
    sticky_key = keys.sticky_sender(tenant, record["to"])
    sticky_id = r.get(sticky_key)
    if sticky_id:
        for session in live:
            if session["id"] == sticky_id:
                return session, "sticky sender of this recipient"
    if not live:
        return None, "the tenant has no usable session"
    ready_ids = {s["id"] for s in sessions.sendable_sessions(r, tenant)}
    ready = [s for s in live if s["id"] in ready_ids]
    # a connected session first; otherwise the message waits for one that may still connect
    pool = ready or live
    best = min(pool, key=lambda s: (_pending(r, s), s["id"]))
    return best, "least loaded connected session" if ready else "least loaded session (not connected yet)"


def dispatch_message(r: redis.Redis, msg_id: str, now: float | None = None) -> str:
    """Route one queued message; returns what happened (routed/failed/skip/unknown)."""
    now = time.time() if now is None else now
    record = r.hgetall(keys.message(msg_id))
    if not record:
        return "unknown"
    if record.get("status") != "queued":
        return "skip"  # a redelivered task: already handled
    expires = float(record.get("expires_at") or 0)
    if expires and expires <= now:
        outbox.fail(r, msg_id, "expired", "expired before it was routed", now=now)
        return "failed"
    session, why = choose_sender(r, record)
    if session is None:
        outbox.fail(r, msg_id, "no_session", why, now=now)
        return "failed"
    if outbox.route(r, msg_id, session["id"], session["phone"], detail=why, now=now):
        r.set(keys.sticky_sender(record["tenant"], record["to"]), session["id"])
    outbox.reserve_slots(r, session["id"], session["phone"], pace_for(session), now=now)
    return "routed"


def pump_session_queues(r: redis.Redis) -> int:
    """Reserve slots for every session with routed messages waiting; returns messages scheduled."""
    total = 0
    for session in sessions.list_sessions(r, None):
        if r.llen(keys.session_queue(session["phone"])):
            total += outbox.reserve_slots(r, session["id"], session["phone"], pace_for(session))
    return total


def requeue_all_expired(r: redis.Redis) -> int:
    return sum(outbox.requeue_expired(r, s["id"]) for s in sessions.list_sessions(r, None))


def stuck_unrouted(r: redis.Redis, older_than: float, now: float | None = None) -> list[str]:
    """Messages still `queued` after `older_than` seconds: their dispatch task was lost."""
    now = time.time() if now is None else now
    return list(r.zrangebyscore(keys.MESSAGES_UNROUTED, "-inf", now - older_than, start=0, num=1000))
