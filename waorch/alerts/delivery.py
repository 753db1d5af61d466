"""Delivering alert events to the sinks: a Redis outbox per sink, retries, a rate limit.

`alert_events` adds every new event to the outbox of each configured sink (same MULTI as the
event itself). A delivery run owns one sink (a Redis lock), sends its outbox oldest first and
removes an event only after the sink accepted it, so delivery is at least once and, with the
lock, once in practice (a crash between the POST and the removal would repeat one message).
A failure pauses the whole sink with exponential backoff (or the receiver's Retry-After); an
event still undelivered WAORCH_ALERT_RETRY_WINDOW after it happened is dropped and counted.

Rate limit: at most WAORCH_ALERT_RATE_LIMIT messages per sink per WAORCH_ALERT_RATE_WINDOW.
When more events wait than the window has messages left, the last free message carries all the
surplus as one summary; with none left the run waits for the window. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

import redis

from waorch.alerts import sinks as alert_sinks
from waorch.alerts.sinks import Sink
from waorch.core import keys, settings
from waorch.core.retry import backoff

log = logging.getLogger(__name__)

BATCH = 200  # outbox entries one run looks at
RETRY_MAX = 300.0  # longest pause of a failing sink


@dataclass(frozen=True)
class Run:
    outcome: Literal["idle", "more", "retry", "waiting", "limited", "busy"]
    messages: int = 0  # messages the sink accepted in this run
    events: int = 0  # events those messages carried
    dropped: int = 0  # events given up on
    retry_in: float | None = None  # when the next run makes sense (retry, waiting, limited)


def plan(pending: list[dict], budget: int) -> list[list[dict]]:
    """Messages for `pending` within `budget`: one each while they fit, else the last one sums up."""
    if budget <= 0 or not pending:
        return []
    if len(pending) <= budget:
        return [[event] for event in pending]
    return [[event] for event in pending[:budget - 1]] + [pending[budget - 1:]]


def deliver(r: redis.Redis, sink: Sink, now: float | None = None) -> Run:
    """One delivery run of one sink (skipped, `busy`, when another run holds it)."""
    conf = settings.get()
    ttl = int(alert_sinks.TIMEOUT * (conf.alert_rate_limit + 2) + 30)
    lock = r.lock(keys.alert_sink_lock(sink.name), timeout=ttl, blocking=False)
    if not lock.acquire():
        return Run("busy")
    try:
        return _run(r, sink, conf, time.time() if now is None else now)
    finally:
        with suppress(redis.exceptions.LockError):
            lock.release()


def _run(r: redis.Redis, sink: Sink, conf: settings.Settings, now: float) -> Run:
    state_key = keys.alert_sink_state(sink.name)
    retry_at = _number(r.hget(state_key, "retry_at"))
    if retry_at > now:
        return Run("waiting", retry_in=retry_at - now)
    outbox = keys.alert_outbox(sink.name)
    entries = r.zrange(outbox, 0, BATCH - 1, withscores=True)
    if not entries:
        return Run("idle")
    pending, expired = [], []
    for text, at in entries:
        (expired if now - at > conf.alert_retry_window else pending).append(text)
    if expired:
        _drop(r, sink.name, expired)
    if not pending:
        return Run("more" if r.zcard(outbox) else "idle", dropped=len(expired))

    sent_log = keys.alert_sent_log(sink.name)
    r.zremrangebyscore(sent_log, "-inf", now - conf.alert_rate_window)
    budget = max(0, conf.alert_rate_limit) - r.zcard(sent_log)
    if budget <= 0:
        oldest = r.zrange(sent_log, 0, 0, withscores=True)
        wait = (oldest[0][1] + conf.alert_rate_window - now) if oldest else conf.alert_rate_window
        return Run("limited", dropped=len(expired), retry_in=max(0.05, wait))

    events = [json.loads(text) for text in pending]
    by_id = dict(zip((e["id"] for e in events), pending, strict=True))
    messages = delivered = 0
    for group in plan(events, budget):
        outcome = sink.send(group)
        if not outcome.ok:
            delay = _failed(r, sink.name, outcome, now)
            return Run("retry", messages, delivered, len(expired), retry_in=delay)
        pipe = r.pipeline(transaction=True)
        pipe.zrem(outbox, *(by_id[e["id"]] for e in group))
        pipe.zadd(sent_log, {secrets.token_hex(6): now})
        pipe.expire(sent_log, int(conf.alert_rate_window) + 60)
        pipe.hset(state_key, mapping={"failures": 0, "retry_at": 0, "last_error": "", "last_ok": now})
        pipe.hincrby(state_key, "delivered", len(group))
        if len(group) > 1:
            pipe.hincrby(state_key, "coalesced", len(group))
        pipe.execute()
        messages += 1
        delivered += len(group)
    more = r.zcard(outbox) > 0
    return Run("more" if more else "idle", messages, delivered, len(expired))


def _failed(r: redis.Redis, name: str, outcome: alert_sinks.Outcome, now: float) -> float:
    state_key = keys.alert_sink_state(name)
    failures = r.hincrby(state_key, "failures", 1)
    delay = backoff(failures, settings.get().alert_retry_base, RETRY_MAX)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, RETRY_MAX))
    r.hset(state_key, mapping={"retry_at": now + delay, "last_error": outcome.detail,
                               "last_error_at": now})
    log.warning("alert sink %s failed (%s); retry in %.1fs", name, outcome.detail, delay)
    return delay


def _drop(r: redis.Redis, name: str, texts: list[str]) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.zrem(keys.alert_outbox(name), *texts)
    pipe.hincrby(keys.alert_sink_state(name), "gave_up", len(texts))
    pipe.execute()
    log.error("alert sink %s: gave up on %d alert events older than WAORCH_ALERT_RETRY_WINDOW",
              name, len(texts))


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def sink_status(r: redis.Redis, names: list[str] | None = None) -> list[dict]:
    """Delivery state of each configured sink (no secrets): pending, failures, last error."""
    out = []
    for name in names if names is not None else alert_sinks.enabled_names():
        state = r.hgetall(keys.alert_sink_state(name))
        out.append({
            "sink": name, "pending": r.zcard(keys.alert_outbox(name)),
            "failures": int(_number(state.get("failures"))),
            "retry_at": _number(state.get("retry_at")) or None,
            "last_error": state.get("last_error") or None,
            "last_ok": _number(state.get("last_ok")) or None,
            "delivered": int(_number(state.get("delivered"))),
            "coalesced": int(_number(state.get("coalesced"))),
            "gave_up": int(_number(state.get("gave_up"))),
        })
    return out


def claim_wake(r: redis.Redis, name: str, delay: float) -> bool:
    """True when no follow-up run is scheduled for the sink yet (the caller schedules one)."""
    # expires on its own (a lost task) a minute after it was due; the woken run deletes it
    return bool(r.set(keys.alert_wake(name), "1", nx=True, px=int((max(0.0, delay) + 60) * 1000)))
