"""The per-message dispatch path as it was before the sender index (issue 12), kept only so that
bench/bench_dispatch.py can measure it beside the batch path in the same run. Not product code:
it reads every session of the tenant, with its usage and queue depths, for every message.
Only the Lua scripts it calls changed since (route.lua keeps the index too: a few commands more)."""

from __future__ import annotations

import time

import redis

from waorch.core import keys
from waorch.policy import bursts, pacing, recipient_protection, suppressions
from waorch.policy import rules as policy
from waorch.policy.pacing import pace_for
from waorch.sending import outbox
from waorch.sending.dispatch import STICKY_SENDER_TTL
from waorch.sessions import registry as sessions
from waorch.sessions.registry import DEAD_STATUSES


def _pending(r: redis.Redis, session: dict) -> int:
    d = outbox.depth(r, session["id"], session["phone"])
    return d["queued"] + d["scheduled"] + d["leased"]


def spare_budget(r: redis.Redis, session: dict, pol: policy.Policy, now: float) -> tuple[int, dict]:
    used = pacing.usage(r, session["id"], now)
    level = pol.level(session.get("trust_level"))
    return level.per_day - used["last_day"] - _pending(r, session), used


def choose_sender(r: redis.Redis, record: dict, now: float) -> tuple[dict | None, str]:
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
        ready = sessions.is_sendable(session)
        healthy = ready and used["cooldown_until"] is None
        scored.append(((healthy, ready, session["id"] not in paused_long, spare, session["id"]), session))
    (healthy, ready, _, spare, _), best = max(scored, key=lambda pair: pair[0])
    if healthy:
        return best, f"healthy session with the most spare budget ({spare} today)"
    if ready:
        return best, "connected session in cooldown (no healthy one)"
    return best, "session not connected yet (no connected one)"


def dispatch_message(r: redis.Redis, msg_id: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    record = r.hgetall(keys.message(msg_id))
    if not record:
        return "unknown"
    if record.get("status") != "queued":
        return "skip"
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
