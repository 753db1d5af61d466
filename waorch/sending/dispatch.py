"""Dispatch: pick the sender session of queued messages, protect their recipients, route them.

A batch of messages is routed by one Lua call, `sending/dispatch_batch.lua`, whose cost per
message does not depend on how many sessions the tenant has: the sender comes from the tenant's
index of live sessions ranked by the sender choice (lua_scripts/lib/sendable.lua,
waorch.sending.sendable). The rules (docs/policy.md, Sender choice):

1. expired -> failed `expired`; recipient suppressed -> failed `suppressed`;
2. explicit `from`: the tenant's live session with that phone, else failed `no_session`;
3. else the recipient's sticky sender (the same person always hears from the same number) unless
   it is dead, or paused for long (WAORCH_REROUTE_AFTER_PAUSE) while another session is not;
4. else the healthy session with the most spare budget, else a connected one in cooldown, else
   one not connected yet; none live: failed `no_session`.

What must stay in Python is prepared before the call: the recipient's quiet-hours window
(phonenumbers time zones). After it, send slots are reserved for every session that got work (one
pipelined round trip), and demand bursts are reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import redis

from waorch.core import keys, lua, settings
from waorch.policy import bursts, recipient_protection
from waorch.policy import rules as policy
from waorch.policy.pacing import pace_for
from waorch.sending import outbox
from waorch.sending.accept import publish_dispatch
from waorch.sessions.registry import DEAD_STATUSES
from waorch.webhooks import events as client_events

log = logging.getLogger(__name__)

# A person nobody wrote to for this long may hear from another number next time; without an end,
# one key per person ever written to would stay in Redis forever. Refreshed by every message.
STICKY_SENDER_TTL = 180 * 86400
BATCH_LIMIT = 200  # messages one Lua call routes: Redis serves nobody else meanwhile (~10-20 ms)
CATCH_UP_LIMIT = 1000  # index entries whose rank rose with time, re-ranked per tenant and call
PUMP_BATCH = 500  # sessions the pump plans slots for per round trip

DISPATCH_BATCH = lua.Script("sending/dispatch_batch", keys=("unrouted", "pump_due", "conf"),
                            args=("now", "signature", "levels", "fallback_per_day", "fallback_threshold",
                                  "reroute_after_pause", "demand_cooldown", "sticky_ttl", "catch_up_limit",
                                  "jitter", "horizon", "default_level", "fallback_interval", "reserve_batch",
                                  "message_count"),
                            rest="messages_then_randoms")
BUILD_INDEXES = lua.Script("sending/build_indexes", keys=("conf",),
                           args=("signature", "levels", "fallback_per_day", "reroute_after_pause"))

DispatchOutcome = Literal["routed", "failed", "skip", "unknown"]
OUTCOMES: tuple[DispatchOutcome, ...] = ("routed", "failed", "skip", "unknown")


_budget_cache: dict[tuple[int, float], tuple[policy.Policy, dict[str, str]]] = {}


def _budgets(pol: policy.Policy, reroute_after_pause: float) -> dict[str, str]:
    """The policy's budgets as the batch script takes them (and publishes them for the index)."""
    cached = _budget_cache.get((id(pol), reroute_after_pause))
    if cached and cached[0] is pol:
        return cached[1]
    fallback = pol.level(None)
    levels = {name: [level.per_day, bursts.demand_threshold(pol, level), level.interval]
              for name, level in sorted(pol.trust_levels.items())}
    values = {"levels": json.dumps(levels, sort_keys=True), "fallback_per_day": str(fallback.per_day),
              "fallback_threshold": str(bursts.demand_threshold(pol, fallback)),
              "reroute_after_pause": repr(float(reroute_after_pause)),
              "demand_cooldown": repr(float(pol.bursts.cooldown_demand)), "jitter": repr(float(pol.jitter)),
              "default_level": pol.default_trust_level, "fallback_interval": repr(fallback.interval)}
    values["signature"] = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    _budget_cache.clear()  # one policy in force at a time
    _budget_cache[(id(pol), reroute_after_pause)] = (pol, values)
    return values


def ensure_indexes(r: redis.Redis) -> int | None:
    """Build the fleet indexes once, for sessions from before them; sessions indexed, None if built."""
    if r.hexists(keys.SENDABLE_CONF, "built"):
        return None
    budgets = _budgets(policy.get(), settings.get().reroute_after_pause)
    indexed = int(BUILD_INDEXES(r, conf=keys.SENDABLE_CONF,
                                **{name: budgets[name] for name in BUILD_INDEXES.args}))
    log.info("fleet indexes built from %d sessions", indexed)
    return indexed


def _quiet_windows(r: redis.Redis, msg_ids: list[str], quiet: policy.QuietHours | None,
                   now: float) -> list[str]:
    """Each message's recipient quiet-hours window ("" when none apply or no policy asks for them)."""
    if quiet is None:
        return [""] * len(msg_ids)
    pipe = r.pipeline(transaction=False)
    for msg_id in msg_ids:
        pipe.hget(keys.message(msg_id), "to")
    return [recipient_protection.quiet_window(to, quiet, now) if to else "" for to in pipe.execute()]


def dispatch_batch(r: redis.Redis, msg_ids: list[str],
                   now: float | None = None) -> dict[DispatchOutcome, int]:
    """Route queued messages (skip: not queued any more); how many had each outcome.

    Cut into calls of BATCH_LIMIT. With several, the Python part of the next one (quiet-hours
    windows: phonenumbers) is prepared while Redis runs the current one, in order, on one thread.
    """
    now = time.time() if now is None else now
    chunks = [msg_ids[start:start + BATCH_LIMIT] for start in range(0, len(msg_ids), BATCH_LIMIT)]
    counts: dict[DispatchOutcome, int] = {}

    def add(found: dict[DispatchOutcome, int]) -> None:
        for outcome, n in found.items():
            counts[outcome] = counts.get(outcome, 0) + n

    if len(chunks) == 1:
        add(_route_chunk(r, _prepare_chunk(r, chunks[0], now)))
        return counts
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatch") as redis_side:
        running: Future | None = None
        for chunk in chunks:
            prepared = _prepare_chunk(r, chunk, now)
            if running is not None:
                add(running.result())
            running = redis_side.submit(_route_chunk, r, prepared)
        if running is not None:
            add(running.result())
    return counts


def _prepare_chunk(r: redis.Redis, msg_ids: list[str], now: float) -> dict[str, Any]:
    """The batch script's arguments for `msg_ids` (what must be computed in Python)."""
    pol = policy.get()
    budgets = _budgets(pol, settings.get().reroute_after_pause)
    quiet = _quiet_windows(r, msg_ids, pol.quiet_hours, now)
    # the jitter of the slots planned in the same call: at most one per message, plus one
    # session's worth for a FIFO that held older messages (what is left waits for the pump)
    pace = pace_for(None, pol)
    randoms = [f"{pace.draw():.6f}" for _ in range(len(msg_ids) + outbox.RESERVE_BATCH)]
    arguments = {"unrouted": keys.MESSAGES_UNROUTED, "pump_due": keys.SESSIONS_PUMP_DUE,
                 "conf": keys.SENDABLE_CONF, "now": f"{now:.6f}", "sticky_ttl": STICKY_SENDER_TTL,
                 "catch_up_limit": CATCH_UP_LIMIT, "horizon": settings.get().schedule_horizon,
                 "reserve_batch": outbox.RESERVE_BATCH, "message_count": len(msg_ids), **budgets,
                 "messages_then_randoms": [part for pair in zip(msg_ids, quiet, strict=True) for part in pair]
                 + randoms}
    return arguments


def _route_chunk(r: redis.Redis, arguments: dict[str, Any]) -> dict[DispatchOutcome, int]:
    """One sending/dispatch_batch.lua call, then its hooks (client events, burst alerts)."""
    out = DISPATCH_BATCH(r, **arguments)
    if int(out[0]) < 0:  # never built (sessions from before the indexes, or a fresh Redis)
        ensure_indexes(r)
        out = DISPATCH_BATCH(r, **arguments)
    counts = {outcome: int(n) for outcome, n in zip(OUTCOMES, out[:4], strict=True) if int(n)}
    at = 5
    failed = out[at:at + int(out[4])]
    at += len(failed)
    routed_to = [tuple(out[at + 1 + 3 * i:at + 4 + 3 * i]) for i in range(int(out[at]))]
    at += 1 + 3 * len(routed_to)
    burst_list = [tuple(out[at + 1 + 3 * i:at + 4 + 3 * i]) for i in range(int(out[at]))]
    for msg_id in failed:
        client_events.message_changed(r, msg_id)
    routed_sessions = {sid: {"id": sid, "phone": phone, "trust_level": level}
                       for sid, phone, level in routed_to}
    for sid, pending, until in burst_list:
        bursts.report_demand_burst(r, routed_sessions[sid], int(pending), float(until))
    return counts


def dispatch_message(r: redis.Redis, msg_id: str, now: float | None = None) -> DispatchOutcome:
    """Route one queued message (a batch of one); returns what happened (skip: not queued any more)."""
    counts = dispatch_batch(r, [msg_id], now)
    return next(iter(counts))


def pump_session_queues(r: redis.Redis, now: float | None = None) -> int:
    """Reserve slots for the sessions whose routed messages are due for planning; returns scheduled.

    Reads sessions:pump:due (entered by routing, moved on by every slot reservation), not every
    session. Dead or deleted sessions leave it (waorch.sending.rerouting moves their messages).
    Also resolves burst alerts whose cooldown is over.
    """
    now = time.time() if now is None else now
    ensure_indexes(r)
    total = 0
    seen: set[str] = set()
    while True:
        due = [sid for sid in r.zrangebyscore(keys.SESSIONS_PUMP_DUE, "-inf", now, start=0, num=PUMP_BATCH)
               if sid not in seen]
        if not due:
            break
        seen.update(due)
        pipe = r.pipeline(transaction=False)
        for sid in due:
            pipe.hmget(keys.session(sid), "phone", "status", "trust_level")
        planned, gone = [], []
        for sid, (phone, status, level) in zip(due, pipe.execute(), strict=True):
            if phone is None or status in DEAD_STATUSES:
                gone.append(sid)
            else:
                planned.append((sid, phone, pace_for({"trust_level": level}), outbox.RESERVE_BATCH))
        if gone:
            r.zrem(keys.SESSIONS_PUMP_DUE, *gone)
        total += outbox.reserve_slots_of(r, planned, now=now)
        if len(due) < PUMP_BATCH:
            break
    bursts.resolve_finished(r)
    return total


def requeue_all_expired(r: redis.Redis, now: float | None = None) -> int:
    """Leases that expired go back to their outboxes (the sessions leases:due names, not all)."""
    ensure_indexes(r)
    return outbox.requeue_leases_due(r, now)


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

