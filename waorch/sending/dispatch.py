"""Dispatch: pick the sender session of a queued message, protect its recipient, route it, plan slots."""

from __future__ import annotations

import logging
import time
from typing import Literal

import redis

from waorch.core import keys
from waorch.policy import bursts, pacing, recipient_protection, suppressions
from waorch.policy import rules as policy
from waorch.policy.pacing import pace_for
from waorch.sending import outbox
from waorch.sending.accept import publish_dispatch
from waorch.sessions import registry as sessions
from waorch.sessions.registry import DEAD_STATUSES

log = logging.getLogger(__name__)

# A person nobody wrote to for this long may hear from another number next time; without an end,
# one key per person ever written to would stay in Redis forever. Refreshed by every message.
STICKY_SENDER_TTL = 180 * 86400


def _pending(r: redis.Redis, session: dict) -> int:
    d = outbox.depth(r, session["id"], session["phone"])
    return d["queued"] + d["scheduled"] + d["leased"]


def spare_budget(r: redis.Redis, session: dict, pol: policy.Policy, now: float) -> tuple[int, dict]:
    """Sends left in the session's rolling day after what it sent and what waits; and its usage."""
    used = pacing.usage(r, session["id"], now)
    level = pol.level(session.get("trust_level"))
    return level.per_day - used["last_day"] - _pending(r, session), used


def choose_sender(r: redis.Redis, record: dict, now: float | None = None) -> tuple[dict | None, str]:
    """The session that should send `record`, with why (or None and why not).

    Explicit `from`; else the recipient's sticky sender (the same person always hears from the
    same number) unless it is dead or paused for long (WAORCH_REROUTE_AFTER_PAUSE) while another
    is not; else the healthy session with the most spare budget.
    """
    now = time.time() if now is None else now
    tenant = record["tenant"]
    live = [s for s in sessions.list_sessions(r, tenant) if s.get("status") not in DEAD_STATUSES]
    paused_long = {s["id"] for s in live if sessions.paused_long(s, now)}
    wanted = record.get("from_requested")
    if wanted:
        for session in live:
            if session["phone"] == wanted:
                return session, "requested sender"
        return None, f"no usable session of this tenant for sender {wanted}"
    sticky_id = r.get(keys.sticky_sender(tenant, record["to"]))
    if sticky_id and (sticky_id not in paused_long or len(paused_long) == len(live)):
        for session in live:
            if session["id"] == sticky_id:
                return session, "sticky sender of this recipient"
    if not live:
        return None, "the tenant has no usable session"
    pol = policy.get()
    scored = []
    for session in live:
        spare, used = spare_budget(r, session, pol, now)
        ready = sessions.is_sendable(session)  # the rule of sendable_sessions, on the real clock
        healthy = ready and used["cooldown_until"] is None
        waits_less = session["id"] not in paused_long
        scored.append(((healthy, ready, waits_less, spare, session["id"]), session))
    (healthy, ready, _, spare, _), best = max(scored, key=lambda pair: pair[0])
    if healthy:
        return best, f"healthy session with the most spare budget ({spare} today)"
    if ready:
        return best, "connected session in cooldown (no healthy one)"
    return best, "session not connected yet (no connected one)"


DispatchOutcome = Literal["routed", "failed", "skip", "unknown"]


def dispatch_message(r: redis.Redis, msg_id: str, now: float | None = None) -> DispatchOutcome:
    """Route one queued message; returns what happened (skip: not queued any more)."""
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
    if suppressions.is_suppressed(r, record["tenant"], record["to"]):
        outbox.fail(r, msg_id, "suppressed", "the recipient opted out", now=now)
        return "failed"
    session, why = choose_sender(r, record, now)
    if session is None:
        outbox.fail(r, msg_id, "no_session", why, now=now)
        return "failed"
    quiet = recipient_protection.quiet_window(record["to"], policy.get().quiet_hours, now)
    if quiet:
        r.hset(keys.message(msg_id), "quiet", quiet)
    if outbox.route(r, msg_id, session["id"], session["phone"], detail=why, now=now):
        r.set(keys.sticky_sender(record["tenant"], record["to"]), session["id"], ex=STICKY_SENDER_TTL)
        bursts.check_demand(r, session, now)
    outbox.reserve_slots(r, session["id"], session["phone"], pace_for(session), now=now)
    return "routed"


def pump_session_queues(r: redis.Redis) -> int:
    """Reserve slots for every session with routed messages waiting; returns messages scheduled.

    Dead sessions get none (waorch.sending.rerouting moves their messages). Also resolves burst alerts
    whose cooldown is over.
    """
    total = 0
    for session in sessions.list_sessions(r, None):
        if session.get("status") not in DEAD_STATUSES and r.llen(keys.session_queue(session["phone"])):
            total += outbox.reserve_slots(r, session["id"], session["phone"], pace_for(session))
    bursts.resolve_finished(r)
    return total


def requeue_all_expired(r: redis.Redis) -> int:
    return sum(outbox.requeue_expired(r, s["id"]) for s in sessions.list_sessions(r, None))


def recover_unrouted(r: redis.Redis, older_than: float) -> int:
    """Dispatch again the messages still `queued` after `older_than` s (their task got lost)."""
    stuck = stuck_unrouted(r, older_than)
    if stuck:
        publish_dispatch(stuck)
    return len(stuck)


def stuck_unrouted(r: redis.Redis, older_than: float, now: float | None = None) -> list[str]:
    """Messages still `queued` after `older_than` seconds: their dispatch task was lost."""
    now = time.time() if now is None else now
    return list(r.zrangebyscore(keys.MESSAGES_UNROUTED, "-inf", now - older_than, start=0, num=1000))
