"""Client events: what a tenant's webhooks hear about its messages, inbound replies and sessions.

An event is `{"id", "type", "created_at", "data"}`. Emitting stores it once in Redis and queues
it on one lane of each subscription that wants its type (a message or a session always maps to
the same lane; each entry keeps its order key, so delivery keeps the order per message/session
and one failing entity does not hold back the others), then asks Celery to deliver. Emitting
never raises from a hook: a client integration must not break or slow sending.

Crash safety: the Lua that applies a change clients hear about also marks it in
`client:events:pending` (lib/message.lua, lib/session.lua; inbound messages with their storage). The hook
that runs right after emits and clears the mark; `sweep_pending` emits what a process that died
in between left marked. Both derive the same events with the same ids from the stored state, and
the emit script's guard lets only one of them queue each change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any

import redis

from waorch.core import jobs, keys, lua, settings
from waorch.messages import inbound
from waorch.webhooks import subscriptions as client_webhooks

log = logging.getLogger(__name__)

EMIT_EVENTS = lua.Script("webhooks/emit_events",
                         args=("tenant", "lane", "now", "ttl", "due", "seq_key", "expected_seq", "new_seq",
                               "mark", "order_key"), rest="events")
CLEAR_PENDING = lua.Script("webhooks/clear_pending", args=("member",))

MESSAGE_STATUS, MESSAGE_INBOUND, SESSION_STATUS = client_webhooks.EVENT_TYPES
CLIENT_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
# An event lives this long after the retry window (a lane whose deliveries stalled completely).
EVENT_TTL_MARGIN = 7 * 86400
# A lane given to a delivery task directly is left to the sweep only if that task got lost.
DIRECT_GRACE = 60.0
CAS_ROUNDS = 20  # each conflict means another emitter made progress, so this ends quickly
SWEEP_BATCH = 1000
STALE_MARK = 86400.0  # a mark the sweep keeps failing on for this long is given up (and logged)


class Conflict(RuntimeError):
    """Other emitters kept winning the compare-and-set (they emitted; nothing is lost)."""

DELIVER_TASK = "tasks.events.deliver"

def lane_for(order_key: str) -> int:
    """The lane of everything about one message or session (stable across processes)."""
    return zlib.crc32(order_key.encode()) % client_webhooks.LANES


def new_event(event_id: str, event_type: str, data: dict[str, Any], created_at: float | None = None) -> dict:
    return {"id": event_id, "type": event_type,
            "created_at": round(time.time() if created_at is None else created_at, 3), "data": data}


def encode(event: dict) -> str:
    """The exact body POSTed to clients (and signed)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def emit(r: redis.Redis, tenant: str, order_key: str, events: list[dict],
         sequence: tuple[str, int, int] | None = None, mark: str = "") -> str:
    """Store and queue `events` in order; 'ok' or 'conflict' (someone else emitted). Raises on Redis errors.

    `sequence` (hash key, expected client_seq, new client_seq) and `mark` (the pending mark to
    settle) guard against emitting a change twice; see webhooks/emit_events.lua.
    """
    if not order_key or any(c.isspace() for c in order_key):
        raise ValueError("an order key is a non-empty id without spaces")
    now = time.time()
    conf = settings.get()
    seq_key, expected, new_seq = sequence or ("", 0, 0)
    result = EMIT_EVENTS(r, tenant=tenant, lane=lane_for(order_key), now=f"{now:.3f}",
                         ttl=int(conf.webhook_retry_window + EVENT_TTL_MARGIN),
                         due=f"{now + DIRECT_GRACE:.3f}", seq_key=seq_key, expected_seq=expected,
                         new_seq=new_seq, mark=mark, order_key=order_key,
                         events=[part for e in events for part in (e["id"], e["type"], encode(e))])
    if result[0] != "ok":
        return "conflict"
    publish(result[1:])
    return "ok"


def publish(lanes: list[str]) -> None:
    """Ask Celery to deliver these lanes now; a broker hiccup is left to the sweep."""
    for member in lanes:
        sub_id, _, lane = member.rpartition(":")
        try:
            # no publish retries: the caller may be sending messages; the sweep covers a lost publish
            jobs.publish(DELIVER_TASK, [sub_id, int(lane)], queue="events", retry=False)
        except Exception:  # noqa: BLE001 - the sweep finds the lane in webhooks:due
            log.warning("could not publish delivery of %s; the sweep will", member, exc_info=True)


def _hook(emitter: Callable[[redis.Redis, str], int], r: redis.Redis, ident: str) -> int:
    """`emitter(r, ident)` run by a hook: how many events, 0 when it failed (the sweep retries)."""
    try:
        return emitter(r, ident)
    except Exception:  # noqa: BLE001 - sending goes on whatever happens here
        log.exception("could not emit client events (%s) for %s", emitter.__name__, ident)
    return 0


# --- message.status ----------------------------------------------------------------------------

def message_event(record: dict[str, str], entry: dict[str, Any], index: int) -> dict:
    """One history entry of a message as a message.status event (its id is stable)."""
    status = entry.get("status")
    data = {
        "message_id": record["id"], "status": status, "at": entry.get("at"),
        "reason": (record.get("reason") or None) if status == "failed" else None,
        "detail": entry.get("detail") or None,
        "to": record.get("to"), "from": record.get("sender") or None,
        "session_id": record.get("session") or None, "client_ref": record.get("client_ref") or None,
        "wa_id": record.get("wa_id") or None,
    }
    return new_event(f"evt_{record['id']}_{index}", MESSAGE_STATUS, data)


def emit_message(r: redis.Redis, msg_id: str) -> int:
    """Emit message.status for each transition past client_seq that clients care about; how many."""
    for _ in range(CAS_ROUNDS):
        pipe = r.pipeline(transaction=True)
        pipe.hgetall(keys.message(msg_id))
        pipe.lrange(keys.message_history(msg_id), 0, -1)
        record, raw_history = pipe.execute()
        if not record.get("id") or not record.get("tenant"):
            return 0
        seen = int(record.get("client_seq") or 0)
        if seen >= len(raw_history):
            return 0
        events = []
        for index in range(seen, len(raw_history)):
            entry = json.loads(raw_history[index])
            if entry.get("status") in CLIENT_STATUSES:
                events.append(message_event(record, entry, index))
        outcome = emit(r, record["tenant"], msg_id, events,
                       (keys.message(msg_id), seen, len(raw_history)), f"msg:{msg_id}")
        if outcome == "ok":
            return len(events)
    raise Conflict(f"message {msg_id}: other emitters kept winning")


def message_changed(r: redis.Redis, msg_id: str) -> int:
    """The hook after a message's state changed: emit what is new; never raises."""
    return _hook(emit_message, r, msg_id)


# --- session.status ----------------------------------------------------------------------------

def session_event(session_id: str, phone: str | None, entry: dict[str, Any]) -> dict:
    """One logged status change of a session as a session.status event (its id is stable)."""
    data = {"session_id": session_id, "phone": phone, "status": entry.get("status"),
            "previous": entry.get("previous") or None, "at": entry.get("at"),
            "detail": entry.get("detail") or None}
    return new_event(f"evt_{session_id}_s{entry.get('seq')}", SESSION_STATUS, data)


def emit_session(r: redis.Redis, session_id: str) -> int:
    """Emit session.status for each logged status change past client_seq; how many."""
    for _ in range(CAS_ROUNDS):
        pipe = r.pipeline(transaction=True)
        pipe.hmget(keys.session(session_id), "tenant", "phone", "client_seq", "status_seq")
        pipe.lrange(keys.session_status_log(session_id), 0, -1)
        (tenant, phone, seen, total), raw_log = pipe.execute()
        seen, total = int(seen or 0), int(total or 0)
        if not tenant or seen >= total:
            return 0
        entries = [json.loads(text) for text in raw_log]
        # changes older than the capped log are gone: only what it still holds can be told
        events = [session_event(session_id, phone, e) for e in entries
                  if seen < int(e.get("seq", 0)) <= total]
        outcome = emit(r, tenant, session_id, events, (keys.session(session_id), seen, total),
                       f"session:{session_id}")
        if outcome == "ok":
            return len(events)
    raise Conflict(f"session {session_id}: other emitters kept winning")


def session_changed(r: redis.Redis, session_id: str, previous: str = "", status: str = "") -> int:
    """The hook after a session's state was applied: emit its new status changes; never raises."""
    if not status or previous == status:
        return 0
    return _hook(emit_session, r, session_id)


# --- message.inbound ---------------------------------------------------------------------------

def inbound_event_id(session_id: str, entry: dict[str, Any]) -> str:
    """Stable for one WhatsApp message: a worker that reports it twice yields one event id."""
    wa_id = entry.get("wa_id")
    if not wa_id:
        return "evt_" + secrets.token_hex(12)
    return "evt_in_" + hashlib.sha256(f"{session_id}:{wa_id}".encode()).hexdigest()[:24]


def mark_inbound(pipe: redis.client.Pipeline, session: dict, entry: dict[str, Any]) -> str | None:
    """Add the message.inbound event of `entry` as pending to the transaction storing it; its id."""
    try:
        found = inbound.clean(entry)
        data = {"session_id": session["id"], "to": session.get("phone"), "from": found["from"],
                "text": found["text"], "media": found["media"], "wa_id": found["wa_id"] or None,
                "at": found["at"]}
        event = new_event(inbound_event_id(session["id"], entry), MESSAGE_INBOUND, data)
        pending = json.dumps({"tenant": session["tenant"], "event": event})
    except Exception:  # noqa: BLE001 - storing the message matters more than telling about it
        log.exception("could not prepare message.inbound for session %s", session.get("id"))
        return None
    pipe.hset(keys.CLIENT_EVENTS_INBOUND, event["id"], pending)
    pipe.zadd(keys.CLIENT_EVENTS_PENDING, {f"inbound:{event['id']}": time.time()})
    return event["id"]


def emit_inbound(r: redis.Redis, event_id: str) -> int:
    """Emit a pending message.inbound event (once, whoever asks first); how many."""
    pending = r.hget(keys.CLIENT_EVENTS_INBOUND, event_id)
    if pending is None:
        return 0
    found = json.loads(pending)
    event = found["event"]
    outcome = emit(r, found["tenant"], event["data"]["session_id"], [event], mark=f"inbound:{event_id}")
    return 1 if outcome == "ok" else 0


def inbound_received(r: redis.Redis, event_id: str | None) -> int:
    """The hook after an inbound message was stored with its pending event; never raises."""
    if not event_id:
        return 0
    return _hook(emit_inbound, r, event_id)


# --- the sweep ---------------------------------------------------------------------------------

# what a pending mark (`<kind>:<id>`, see lib/client_event_mark.lua) still owes clients
_EMITTERS: dict[str, Callable[[redis.Redis, str], int]] = {
    "msg": emit_message, "session": emit_session, "inbound": emit_inbound,
}


def sweep_pending(r: redis.Redis, grace: float | None = None, now: float | None = None,
                  limit: int = SWEEP_BATCH) -> int:
    """Emit what changes marked at least `grace` seconds ago still owe clients; events emitted."""
    now = time.time() if now is None else now
    grace = settings.get().client_event_grace if grace is None else grace
    marks = r.zrangebyscore(keys.CLIENT_EVENTS_PENDING, "-inf", now - grace, start=0, num=limit,
                            withscores=True)
    emitted = 0
    for member, marked_at in marks:
        kind, _, ident = member.partition(":")
        try:
            emitter = _EMITTERS.get(kind)
            if emitter is not None:
                emitted += emitter(r, ident)
            CLEAR_PENDING(r, member=member)  # nothing left (or it is gone): the mark goes
        except Exception:  # noqa: BLE001 - one bad entry must not stop the others
            log.exception("could not emit pending client events of %s", member)
            if marked_at < now - STALE_MARK:
                log.error("giving up on pending client events of %s (marked %.0f s ago)",
                          member, now - marked_at)
                r.zrem(keys.CLIENT_EVENTS_PENDING, member)
                if kind == "inbound":
                    r.hdel(keys.CLIENT_EVENTS_INBOUND, ident)
    return emitted
