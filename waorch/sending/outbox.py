"""Per-session queues, send slots, claim leases, ACK/NACK: thin wrappers over the Lua scripts."""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis

from waorch.core import keys, lua, settings
from waorch.metrics import send_latency
from waorch.policy import bursts, trust
from waorch.policy.pacing import Pace, pace_for
from waorch.sending import claim_wakeup
from waorch.webhooks import events as client_events

ROUTE = lua.Script("sending/route", keys=("queue", "unrouted", "pump_due"),
                   args=("msg_id", "session_id", "sender", "now", "detail"))
ACK = lua.Script("sending/ack", keys=("leases", "outbox", "pacing"),
                 args=("msg_id", "lease_token", "wa_id", "sent_at", "now", "session_id", "day"))
NACK = lua.Script("sending/nack", keys=("leases", "outbox"),
                  args=("msg_id", "lease_token", "reason", "retryable", "detail", "now", "max_attempts",
                        "retry_base"))
REQUEUE_EXPIRED = lua.Script("sending/requeue_expired", keys=("leases", "outbox"), args=("now",))
REQUEUE_DUE = lua.Script("sending/requeue_due", keys=("leases_due",), args=("now",), rest="session_ids")
FAIL = lua.Script("sending/fail", keys=("unrouted", "outbox", "leases"),
                  args=("msg_id", "reason", "detail", "now"))
RECORD_RECEIPT = lua.Script("sending/record_receipt", args=("msg_id", "status", "at"))

RESERVE_SLOTS = lua.Script("sending/reserve_slots",
                           keys=("queue", "outbox", "pacing", "sendlog", "session", "pump_due"),
                           args=("now", "interval", "jitter", "horizon", "per_day", "session_id"),
                           rest="randoms")
CLAIM = lua.Script("sending/claim", keys=("outbox", "leases", "pacing", "sendlog", "session"),
                   args=("now", "lease_seconds", "lease_token", "interval", "jitter", "random", "per_minute",
                         "per_day", "trust_level", "recipient_daily_cap", "max_examined", "release_random",
                         "recipient_order"))

AckOutcome = Literal["ok", "duplicate", "unknown"]  # duplicate: it was acknowledged before
NackOutcome = Literal["retry", "failed", "stale"]  # stale: not claimed, or another lease
MAX_EXAMINED = 100  # due messages one claim call may hold or fail before it answers
LEVEL_RETRIES = 3  # a trust level changing under a claim is re-read this often
RESERVE_BATCH = 50  # slots one reserve call may hand out
POLL_INTERVAL = 0.5  # parked claims re-check this often in `poll` mode or while wake-ups are down


@dataclass(frozen=True)
class Claim:
    outcome: Literal["claimed", "wait", "empty"]
    message: dict[str, Any] | None = None
    ready_at: float | None = None


def route(r: redis.Redis, msg_id: str, session_id: str, phone: str, detail: str = "",
          now: float | None = None) -> bool:
    """Put a queued message on the session's FIFO (state routed); False if not queued."""
    now = time.time() if now is None else now
    return bool(ROUTE(r, queue=keys.session_queue(phone), unrouted=keys.MESSAGES_UNROUTED,
                      pump_due=keys.SESSIONS_PUMP_DUE, msg_id=msg_id, session_id=session_id, sender=phone,
                      now=f"{now:.6f}", detail=detail))


def reserve_slots(r: redis.Redis, session_id: str, phone: str, pace: Pace,
                  now: float | None = None, rng: random.Random | None = None) -> int:
    """Move messages from the session FIFO to its outbox with paced send times; returns count."""
    scheduled, suppressed = reserve_in_redis(r, session_id, phone, pace, now=now, rng=rng)
    for msg_id in suppressed:
        client_events.message_changed(r, msg_id)
    if scheduled:
        claim_wakeup.notify(r, session_id)
    return scheduled


def reserve_slots_of(r: redis.Redis, sessions: list[tuple[str, str, Pace, int]],
                     now: float | None = None) -> int:
    """reserve_slots for several (session id, phone, pace, most slots wanted) in one round trip (and
    one for wake-ups); returns how many were scheduled."""
    if not sessions:
        return 0
    now = time.time() if now is None else now
    pipe = r.pipeline(transaction=False)
    for session_id, phone, pace, wanted in sessions:
        batch = max(1, min(wanted, RESERVE_BATCH))
        RESERVE_SLOTS.queue(r, pipe, **_reserve_arguments(session_id, phone, pace, now, None, batch))
    results = pipe.execute()
    total = 0
    wake = r.pipeline(transaction=False)
    for (session_id, *_), out in zip(sessions, results, strict=True):
        total += int(out[0])
        for msg_id in out[1:]:
            client_events.message_changed(r, msg_id)
        if int(out[0]):
            wake.publish(keys.OUTBOX_WAKE, session_id)  # claim_wakeup.notify, pipelined
    if total:
        wake.execute()
    return total


def claim(r: redis.Redis, session_id: str, pace: Pace, now: float | None = None,
          lease_seconds: int | None = None) -> Claim:
    """Lease the session's next due message, honouring the pacing gap since the last claim."""
    now = time.time() if now is None else now
    lease = lease_seconds or settings.get().lease_seconds
    token = secrets.token_hex(12)
    # every pacing and recipient-protection rule is decided in sending/claim.lua (waorch.policy.pacing)
    result = claim_in_redis(r, session_id, pace, now, lease, token)
    for msg_id in result[2:]:  # failed on the way (expired, or its recipient opted out)
        client_events.message_changed(r, msg_id)
    if result[0] == "wait":
        return Claim("wait", ready_at=float(result[1]))
    if result[0] == "empty":
        return Claim("empty")
    # the lease sweep's index (requeue_leases_due); if this process dies before this line, the
    # session's next PING (sessions/record_ping.lua) or its next claim (sending/claim.lua) covers it
    r.zadd(keys.LEASES_DUE, {session_id: now + lease}, lt=True)
    record = r.hgetall(keys.message(result[1]))
    return Claim("claimed", message={
        "id": record["id"], "to": record.get("to"), "text": record.get("text", ""),
        "media": record.get("media") or None, "lease_token": token,
        "lease_expires_at": now + lease, "attempt": int(record.get("attempts", 1)),
    })


def reserve_in_redis(r: redis.Redis, session_id: str, phone: str, pace: Pace, now: float | None = None,
                     rng: random.Random | None = None,
                     batch: int = RESERVE_BATCH) -> tuple[int, list[str]]:
    """sending/reserve_slots.lua alone (no hooks): (scheduled, ids failed as suppressed)."""
    now = time.time() if now is None else now
    out = RESERVE_SLOTS(r, **_reserve_arguments(session_id, phone, pace, now, rng, batch))
    return int(out[0]), list(out[1:])


def _reserve_arguments(session_id: str, phone: str, pace: Pace, now: float, rng: random.Random | None,
                       batch: int) -> dict[str, Any]:
    return {"queue": keys.session_queue(phone), "outbox": keys.session_outbox(session_id),
            "pacing": keys.session_pacing(session_id), "sendlog": keys.session_sendlog(session_id),
            "session": keys.session(session_id), "pump_due": keys.SESSIONS_PUMP_DUE, "now": f"{now:.6f}",
            "interval": pace.interval, "jitter": pace.jitter, "horizon": settings.get().schedule_horizon,
            "per_day": pace.per_day or 0, "session_id": session_id,
            "randoms": [f"{pace.draw(rng):.6f}" for _ in range(batch)]}


def claim_in_redis(r: redis.Redis, session_id: str, pace: Pace, now: float, lease: int,
                   token: str) -> list:
    """sending/claim.lua alone (no hooks); re-reads the pacing when the trust level changed meanwhile."""
    for _ in range(LEVEL_RETRIES):
        result = CLAIM(r, outbox=keys.session_outbox(session_id), leases=keys.session_leases(session_id),
                       pacing=keys.session_pacing(session_id), sendlog=keys.session_sendlog(session_id),
                       session=keys.session(session_id), now=f"{now:.6f}", lease_seconds=lease,
                       lease_token=token, interval=pace.interval, jitter=pace.jitter,
                       random=f"{pace.draw():.6f}", per_minute=pace.per_minute, per_day=pace.per_day or 0,
                       trust_level="" if pace.level is None else pace.level,
                       recipient_daily_cap=pace.recipient_daily_cap or 0, max_examined=MAX_EXAMINED,
                       release_random=f"{pace.draw():.6f}",
                       recipient_order="0" if settings.get().recipient_order == "off" else "1")
        if result[0] != "level":
            return result
        pace = pace_for({"trust_level": result[1]})
    return ["wait", f"{now + 0.1:.6f}"]


def claim_waiting(r: redis.Redis, session_id: str, pace: Pace, wait: float) -> Claim:
    """Long-poll: claim, waiting up to `wait` seconds for a message to become due."""
    deadline = time.monotonic() + max(0.0, wait)
    conf = settings.get()
    if conf.claim_wakeup == "poll":
        return _claim_until(r, session_id, pace, deadline, None, conf.claim_recheck)
    with claim_wakeup.watching(conf.redis_url, session_id) as watch:
        return _claim_until(r, session_id, pace, deadline, watch, conf.claim_recheck)


def _claim_until(r: redis.Redis, session_id: str, pace: Pace, deadline: float,
                 watch: claim_wakeup.Watch | None, recheck: float) -> Claim:
    """Claim until something is claimed or `deadline` passes, parked on `watch` (None: polling)."""
    while True:
        mark = watch.mark() if watch else 0  # before the claim: a wake-up during it is not lost
        result = claim(r, session_id, pace)
        remaining = deadline - time.monotonic()
        if result.outcome == "claimed" or remaining <= 0:
            return result
        # woken by a notification; else at the head's due time, else on the safety re-check (new
        # messages may arrive meanwhile: without wake-ups, that re-check is the poll interval)
        pause = recheck if watch and watch.live else POLL_INTERVAL
        if result.ready_at is not None:
            pause = min(pause, max(0.02, result.ready_at - time.time()))
        if watch:
            watch.wait(mark, min(pause, remaining))
        else:
            time.sleep(min(pause, remaining))
        claim_wakeup.rechecks[session_id] += 1


def ack(r: redis.Redis, session_id: str, msg_id: str, lease_token: str, wa_id: str,
        sent_at: float | None = None, now: float | None = None) -> AckOutcome:
    now = time.time() if now is None else now
    sent_at = now if sent_at is None else sent_at
    outcome = ACK(r, leases=keys.session_leases(session_id), outbox=keys.session_outbox(session_id),
                  pacing=keys.session_pacing(session_id), msg_id=msg_id, lease_token=lease_token,
                  wa_id=wa_id, sent_at=f"{sent_at:.6f}", now=f"{now:.6f}", session_id=session_id,
                  day=time.strftime("%Y%m%d", time.gmtime(sent_at)))
    if outcome == "ok":
        client_events.message_changed(r, msg_id)
        bursts.after_send(r, session_id, msg_id, sent_at, now)  # trust stats + send-log bursts
        send_latency.observe_send_latency(r, msg_id, sent_at)  # /metrics accepted→sent histogram
    return outcome


def nack(r: redis.Redis, session_id: str, msg_id: str, lease_token: str, reason: str,
         retryable: bool, detail: str = "", now: float | None = None) -> NackOutcome:
    conf = settings.get()
    now = time.time() if now is None else now
    outcome = NACK(r, leases=keys.session_leases(session_id), outbox=keys.session_outbox(session_id),
                   msg_id=msg_id, lease_token=lease_token, reason=reason, retryable="1" if retryable else "0",
                   detail=detail[:500], now=f"{now:.6f}", max_attempts=conf.max_attempts,
                   retry_base=conf.retry_base)
    if outcome == "failed":
        client_events.message_changed(r, msg_id)
    elif outcome == "retry":
        claim_wakeup.notify(r, session_id)  # parked claims learn the retry's due time
    if outcome in ("retry", "failed"):
        trust.note_send(r, session_id, False, now)  # the trust review's failure rate
    return outcome


def requeue_leases_due(r: redis.Redis, now: float | None = None, batch: int = 500) -> int:
    """Expired leases of the sessions leases:due names as due, back to their outboxes; returns count.

    Reads only the due entries, not every session: each claim enters its session (outbox.claim),
    each PING its earliest lease (sessions/record_ping.lua), and this sweep moves each entry on.
    """
    now = time.time() if now is None else now
    total = 0
    while True:
        due = r.zrangebyscore(keys.LEASES_DUE, "-inf", now, start=0, num=batch)
        if not due:
            return total
        out = REQUEUE_DUE(r, leases_due=keys.LEASES_DUE, now=f"{now:.6f}", session_ids=due)
        total += int(out[0])
        for session_id in out[1:]:
            claim_wakeup.notify(r, session_id)
        if len(due) < batch:
            return total


def requeue_expired(r: redis.Redis, session_id: str, now: float | None = None) -> int:
    now = time.time() if now is None else now
    requeued = int(REQUEUE_EXPIRED(r, leases=keys.session_leases(session_id),
                                   outbox=keys.session_outbox(session_id), now=f"{now:.6f}"))
    if requeued:
        claim_wakeup.notify(r, session_id)
    return requeued


def fail(r: redis.Redis, msg_id: str, reason: str, detail: str = "",
         session_id: str | None = None, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    failed = bool(FAIL(r, unrouted=keys.MESSAGES_UNROUTED,
                       outbox=keys.session_outbox(session_id) if session_id else "",
                       leases=keys.session_leases(session_id) if session_id else "",
                       msg_id=msg_id, reason=reason, detail=detail, now=f"{now:.6f}"))
    if failed:
        client_events.message_changed(r, msg_id)
    return failed


def record_receipt(r: redis.Redis, session_id: str, wa_id: str, status: str,
                   at: float | None = None) -> str | None:
    """Advance the message WhatsApp knows as `wa_id`; returns our message id if it advanced."""
    if status not in ("delivered", "read"):
        return None
    msg_id = r.get(keys.wa_message(session_id, wa_id))
    if not msg_id:
        return None
    at = time.time() if at is None else at
    advanced = RECORD_RECEIPT(r, msg_id=msg_id, status=status, at=f"{at:.6f}")
    if advanced:
        client_events.message_changed(r, msg_id)
    return msg_id if advanced else None


def depth(r: redis.Redis, session_id: str, phone: str) -> dict[str, int]:
    """Queue depths of one session: waiting for a slot, scheduled, leased."""
    pipe = r.pipeline(transaction=False)
    pipe.llen(keys.session_queue(phone))
    pipe.zcard(keys.session_outbox(session_id))
    pipe.zcard(keys.session_leases(session_id))
    queued, scheduled, leased = pipe.execute()
    return {"queued": queued, "scheduled": scheduled, "leased": leased}
