"""Delivering client events: signed HTTP POSTs, one lane at a time, retried, then dead-lettered.

A delivery run owns one lane of one subscription (a Redis lock) and POSTs its events oldest
first; an event leaves the lane only once the client answered 2xx, so delivery is at least once.
A failure backs off only the entity (message or session) whose event failed: its events wait, in
order, while the lane's other entities go on; several failures in a row (the endpoint is down)
pause the whole lane. Backoff is exponential with jitter; an event still failing at the end of
WAORCH_WEBHOOK_RETRY_WINDOW (counted from when it was queued) becomes a dead letter.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal

import redis
import urllib3

from waorch.core import keys, lua, settings, signing
from waorch.core.retry import backoff
from waorch.webhooks import subscriptions as client_webhooks
from waorch.webhooks.subscriptions import Target, WebhookUrlError

log = logging.getLogger(__name__)

DEAD_LETTER = lua.Script("webhooks/dead_letter",
                         args=("sub_id", "lane", "now", "window", "keep", "attempts", "error", "id_prefix",
                               "most", "order_key", "scan"))
BLOCK_LANE = lua.Script("webhooks/block_lane",
                        args=("sub_id", "lane", "order_key", "block", "streak", "paused_until", "pauses"))
POP_LANE = lua.Script("webhooks/pop_lane", args=("sub_id", "lane", "entry", "now", "order_key"))
RELEASE_LANE = lua.Script("webhooks/release_lane", args=("sub_id", "lane", "token", "due"))
DISABLE_EVENTS = lua.Script("webhooks/disable_events",
                            args=("sub_id", "now", "reason", "keep", "id_prefix", "lanes", "lane", "attempts",
                                  "entry"))

USER_AGENT = "waorch-webhooks/1"
MAX_EVENTS_PER_RUN = 200
SCAN = 1000  # lane entries one pass looks through for the next event that may go
DOWN_STREAK = 3  # failed attempts in a row, whatever the entity, that pause the whole lane
# Retries this soon are scheduled by the delivering task itself (Celery countdown); later ones by
# the sweep: the Redis broker redelivers tasks whose ETA lies beyond its visibility timeout.
SELF_SCHEDULE_MAX = 60.0
SWEEP_GRACE = 60.0  # a lane handed to a task is swept again only if that task got lost
DEAD_LETTER_BATCH = 1000
# The endpoint says it is gone for good: the webhook is disabled (client_webhooks.enable undoes it).
GONE = "HTTP 410 Gone"


@dataclass(frozen=True)
class LaneRun:
    outcome: Literal["idle", "more", "retry", "busy", "gone", "disabled"]
    delivered: int = 0
    dead: int = 0
    retry_in: float | None = None


def post_event(target: Target, secret: str, event_id: str, body: bytes, timeout: float,
               attempt: int) -> tuple[bool, str]:
    """POST one signed event to the checked address; (2xx?, what happened)."""
    headers = {
        "Host": target.netloc, "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-Waorch-Event-Id": event_id, "X-Waorch-Delivery-Attempt": str(attempt),
        **signing.sign_headers(secret, body, prefix="X-Waorch-"),
    }
    limits = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
    if target.scheme == "https":
        # connect to the address that was checked, verify the certificate for the name
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            target.address, target.port, timeout=limits, retries=False, maxsize=1,
            ssl_context=ssl.create_default_context(), server_hostname=target.host,
            assert_hostname=target.host)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=limits, retries=False,
                                          maxsize=1)
    try:
        response = pool.urlopen("POST", target.path, body=body, headers=headers, redirect=False,
                                assert_same_host=False, preload_content=False, release_conn=True)
        status = response.status
        response.drain_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return False, _describe(exc)
    finally:
        pool.close()
    if status == 410:
        return False, GONE
    if 300 <= status < 400:
        # following would send the signed event somewhere nobody checked: a failed attempt
        return False, f"HTTP {status} (redirects are not followed)"
    return 200 <= status < 300, f"HTTP {status}"


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).split(": ", 1)[-1] if isinstance(reason, Exception) else str(reason)
    return f"{exc.__class__.__name__}: {text}"[:300]


def deliver_lane(r: redis.Redis, sub_id: str, lane: int) -> LaneRun:
    """Deliver what is due on one lane (one run at a time per lane); say what should follow."""
    conf = settings.get()
    token = secrets.token_hex(8)
    lock_ttl = int(conf.webhook_timeout * 3 + 30)
    if not r.set(keys.webhook_lane_lock(sub_id, lane), token, nx=True, ex=lock_ttl):
        return LaneRun("busy")
    record = r.hgetall(keys.client_webhook(sub_id))
    if not record.get("id"):
        _forget_lane(r, sub_id, lane, token)
        return LaneRun("gone")
    if record.get("disabled_at"):
        # events queued while it was being disabled (or redelivered meanwhile) join the dead letters
        return _disable(r, sub_id, lane, token, record.get("disabled_reason") or GONE, 0)
    secret = client_webhooks.unseal(record.get("secret", ""))
    started = now = time.time()
    delivered = dead = 0
    while True:
        if delivered >= MAX_EVENTS_PER_RUN or now - started > conf.webhook_timeout:
            return _release(r, sub_id, lane, token, LaneRun("more", delivered, dead), now + SWEEP_GRACE)
        entries = r.lrange(keys.webhook_lane(sub_id, lane), 0, SCAN - 1)
        if not entries:
            return _release(r, sub_id, lane, token, LaneRun("idle", delivered, dead), now + SWEEP_GRACE)
        state = LaneState.read(r, sub_id, lane)
        if state.paused_until > now:
            return _wait(r, sub_id, lane, token, LaneRun("retry", delivered, dead, state.paused_until - now))
        entry, wake = pick(entries, state.blocks, now)
        if entry is None:
            return _wait(r, sub_id, lane, token, LaneRun("retry", delivered, dead, max(wake - now, 0.0)))
        event_id, queued, key = split_entry(entry)
        block = state.blocks.get(key)
        body = r.get(keys.client_event(event_id))
        if body is None:
            log.warning("client event %s expired before delivery; dropped from %s", event_id, sub_id)
            _pop(r, sub_id, lane, entry, key, now)
            continue
        attempts = int(block["attempts"]) + 1 if block else 1
        ok, detail = _attempt(record, secret, event_id, body.encode(), conf.webhook_timeout, attempts)
        now = time.time()
        if ok:
            _pop(r, sub_id, lane, entry, key, now)
            delivered += 1
            continue
        if detail == GONE:
            log.warning("webhook %s answered 410 Gone: disabled", sub_id)
            return _disable(r, sub_id, lane, token, GONE, attempts, delivered, entry)
        dead += _failed(r, sub_id, lane, state, key, block, queued, attempts, detail, now)


@dataclass(frozen=True)
class LaneState:
    """A lane's failure state: per entity whose events wait (`block:<order key>` → attempts,
    next_at, since, error) and the lane's own pause while the endpoint looks down."""

    blocks: dict[str, dict]
    paused_until: float = 0.0
    pauses: int = 0
    streak: int = 0  # failed attempts in a row (any entity) since the last success

    @classmethod
    def read(cls, r: redis.Redis, sub_id: str, lane: int) -> LaneState:
        found = r.hgetall(keys.webhook_lane_state(sub_id, lane))
        blocks = {}
        for name, value in found.items():
            if name.startswith("block:"):
                with suppress(ValueError):
                    blocks[name[len("block:"):]] = json.loads(value)
        return cls(blocks, _number(found.get("paused_until") or "0"), int(found.get("lane_attempts") or 0),
                   int(found.get("fail_streak") or 0))


def split_entry(entry: str) -> tuple[str, float, str]:
    """`<event id> <queued_at> <order key>` → its parts; an entry without a key is its own entity."""
    parts = entry.split(" ")
    event_id = parts[0]
    key = parts[2] if len(parts) > 2 and parts[2] else event_id
    return event_id, _number(parts[1]) if len(parts) > 1 else 0.0, key


def pick(entries: list[str], blocks: dict[str, dict], now: float) -> tuple[str | None, float]:
    """The entry to try next: the first event of an entity that is not failing, else the first
    event of the failing entity whose retry is due soonest; (None, when one is due) otherwise.

    Only an entity's first event is ever tried, so its events keep their order; other entities
    overtake a failing one (order between entities was never promised)."""
    firsts: dict[str, str] = {}
    for entry in entries:
        key = split_entry(entry)[2]
        if key not in blocks:
            return entry, now
        firsts.setdefault(key, entry)
    wake, key = min((float(blocks[k].get("next_at") or 0), k) for k in firsts)
    return (firsts[key], now) if wake <= now else (None, wake)


def _failed(r: redis.Redis, sub_id: str, lane: int, state: LaneState, key: str, block: dict | None,
            queued: float, attempts: int, detail: str, now: float) -> int:
    """Back off the entity whose event failed (its events wait, the lane goes on), dead-letter
    what outlived the retry window, and pause the lane when the endpoint itself looks down."""
    conf = settings.get()
    window_end = queued + conf.webhook_retry_window
    dead = 0
    new_block = ""
    if window_end <= now:
        dead = int(DEAD_LETTER(r, sub_id=sub_id, lane=lane, now=f"{now:.3f}",
                               window=conf.webhook_retry_window, keep=conf.webhook_dead_keep,
                               attempts=attempts, error=detail,
                               id_prefix=f"dl_{secrets.token_hex(8)}_", most=DEAD_LETTER_BATCH,
                               order_key=key, scan=SCAN))
        log.warning("webhook %s: %d event(s) dead-lettered after %s", sub_id, dead, detail)
    else:
        delay = min(backoff(attempts, conf.webhook_retry_base, conf.webhook_retry_max), window_end - now)
        new_block = json.dumps({"attempts": attempts, "next_at": now + delay,
                                "since": block["since"] if block else now, "error": detail})
    streak = state.streak + 1
    paused_until, pauses = "", 0
    # a new entity failing right after another failure, or failures of several entities in a row:
    # the endpoint is down or failing for everyone, not refusing one payload
    if (block is None and state.streak >= 1) or streak >= DOWN_STREAK:
        pauses = state.pauses + 1
        paused_until = f"{now + backoff(pauses, conf.webhook_retry_base, conf.webhook_retry_max):.6f}"
    BLOCK_LANE(r, sub_id=sub_id, lane=lane, order_key=key, block=new_block, streak=streak,
               paused_until=paused_until, pauses=pauses)
    return dead


def _attempt(record: dict, secret: str | None, event_id: str, body: bytes, timeout: float,
             attempt: int) -> tuple[bool, str]:
    if secret is None:
        return False, "cannot unseal the signing secret (was WAORCH_SECRET_KEY changed?)"
    try:
        # checked again at every attempt: DNS and the allow-list may have changed
        target = client_webhooks.check_url(record["url"])
    except WebhookUrlError as exc:
        return False, f"target refused: {exc}"[:300]
    return post_event(target, secret, event_id, body, timeout, attempt)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _pop(r: redis.Redis, sub_id: str, lane: int, entry: str, key: str, now: float) -> None:
    POP_LANE(r, sub_id=sub_id, lane=lane, entry=entry, now=f"{now:.3f}", order_key=key)


def _wait(r: redis.Redis, sub_id: str, lane: int, token: str, run: LaneRun) -> LaneRun:
    """Nothing is due before run.retry_in: the task schedules short waits itself, the sweep the rest."""
    delay = run.retry_in or 0.0
    due = time.time() + delay + (SWEEP_GRACE if delay <= SELF_SCHEDULE_MAX else 0.0)
    return _release(r, sub_id, lane, token, run, due)


def _release(r: redis.Redis, sub_id: str, lane: int, token: str, run: LaneRun, due: float) -> LaneRun:
    left = RELEASE_LANE(r, sub_id=sub_id, lane=lane, token=token, due=f"{due:.3f}")
    if run.outcome == "idle" and left == "more":
        # an event arrived while this run was letting go: the caller runs the lane again
        return LaneRun("more", run.delivered, run.dead)
    return run


def _disable(r: redis.Redis, sub_id: str, lane: int, token: str, reason: str, attempts: int,
             delivered: int = 0, entry: str = "") -> LaneRun:
    """Disable the webhook; what its lanes hold becomes dead letters (redeliverable once enabled)."""
    now = time.time()
    dead = int(DISABLE_EVENTS(r, sub_id=sub_id, now=f"{now:.3f}", reason=reason,
                              keep=settings.get().webhook_dead_keep, id_prefix=f"dl_{secrets.token_hex(8)}_",
                              lanes=client_webhooks.LANES, lane=lane, attempts=attempts, entry=entry))
    _release(r, sub_id, lane, token, LaneRun("idle"), now)
    return LaneRun("disabled", delivered, dead)


def _forget_lane(r: redis.Redis, sub_id: str, lane: int, token: str) -> None:
    """The subscription was deleted: what is left on its lanes has nowhere to go."""
    client_webhooks.UNSUBSCRIBE(r, sub_id=sub_id, tenant="", lanes=client_webhooks.LANES)
    RELEASE_LANE(r, sub_id=sub_id, lane=lane, token=token, due="0")


@contextmanager
def worker_slot(r: redis.Redis, node: str | None) -> Iterator[bool]:
    """One of WAORCH_WEBHOOK_PARALLEL delivery slots of a Celery worker node (True if got).

    A slow or dead client endpoint then holds at most that many of the node's processes, and
    dispatch, orchestration and maintenance tasks keep the others.
    """
    if not node:
        yield True
        return
    conf = settings.get()
    ttl = int(conf.webhook_timeout * 3 + 30)
    held = None
    for index in range(max(1, conf.webhook_parallel)):
        lock = r.lock(f"webhooks:running:{node}:{index}", timeout=ttl, blocking=False)
        if lock.acquire():
            held = lock
            break
    try:
        yield held is not None
    finally:
        if held is not None:
            with suppress(redis.exceptions.LockError):
                held.release()


def claim_due(r: redis.Redis, now: float | None = None, limit: int = 500) -> list[tuple[str, int]]:
    """Lanes whose time has come (the sweep hands each to a delivery task, then waits a grace)."""
    now = time.time() if now is None else now
    members = r.zrangebyscore(keys.WEBHOOKS_DUE, "-inf", now, start=0, num=limit)
    if not members:
        return []
    # XX: a lane emptied meanwhile must not come back into the due set
    r.zadd(keys.WEBHOOKS_DUE, {m: now + SWEEP_GRACE for m in members}, xx=True)
    found = []
    for member in members:
        sub_id, _, lane = member.rpartition(":")
        if lane.isdigit():
            found.append((sub_id, int(lane)))
    return found
