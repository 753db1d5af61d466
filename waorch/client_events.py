"""Client events: what a tenant's webhooks hear about its messages, inbound replies and sessions.

An event is `{"id", "type", "created_at", "data"}`. Emitting stores it once in Redis and queues
it on one lane of each subscription that wants its type (a message or a session always maps to
the same lane, which is delivered strictly in order), then asks Celery to deliver. Emitting
never raises: a client integration must not break or slow sending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import zlib
from typing import Any

import redis

from waorch import client_webhooks, inbound, keys, lua, settings

log = logging.getLogger("waorch.client_events")

MESSAGE_STATUS, MESSAGE_INBOUND, SESSION_STATUS = client_webhooks.EVENT_TYPES
CLIENT_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
# An event lives this long after the retry window (a lane whose deliveries stalled completely).
EVENT_TTL_MARGIN = 7 * 86400
# A lane given to a delivery task directly is left to the sweep only if that task got lost.
DIRECT_GRACE = 60.0


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
         sequence: tuple[str, int, int] | None = None) -> str:
    """Store and queue `events` in order; 'ok' or 'conflict' (sequence moved on). Raises on Redis errors."""
    now = time.time()
    conf = settings.get()
    args: list[Any] = [tenant, lane_for(order_key), f"{now:.3f}",
                       int(conf.webhook_retry_window + EVENT_TTL_MARGIN), f"{now + DIRECT_GRACE:.3f}"]
    args += list(sequence) if sequence else ["", 0, 0]
    for event in events:
        args += [event["id"], event["type"], encode(event)]
    result = lua.script(r, "client_event_emit")(args=args)
    if result[0] != "ok":
        return "conflict"
    publish(result[1:])
    return "ok"


def publish(lanes: list[str]) -> None:
    """Ask Celery to deliver these lanes now; a broker hiccup is left to the sweep."""
    if not lanes:
        return
    from tasks.events import enqueue  # noqa: PLC0415  (the Celery app only when there is work)

    for member in lanes:
        sub_id, _, lane = member.rpartition(":")
        try:
            enqueue(sub_id, int(lane))
        except Exception:  # noqa: BLE001 - the sweep finds the lane in webhooks:due
            log.warning("could not publish delivery of %s; the sweep will", member, exc_info=True)


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


def message_changed(r: redis.Redis, msg_id: str) -> int:
    """Emit message.status for each transition clients care about not emitted yet; how many."""
    try:
        # each conflict means another caller emitted meanwhile: progress, so this ends quickly
        for _ in range(20):
            pipe = r.pipeline(transaction=False)
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
                           (keys.message(msg_id), seen, len(raw_history)))
            if outcome == "ok":
                return len(events)
    except Exception:  # noqa: BLE001 - sending goes on whatever happens here
        log.exception("could not emit client events for message %s", msg_id)
    return 0


# --- session.status ----------------------------------------------------------------------------

def session_changed(r: redis.Redis, session_id: str, previous: str, status: str) -> None:
    """Emit session.status for a session whose status changed."""
    if not status or previous == status:
        return
    try:
        tenant, phone, last_error = r.hmget(keys.session(session_id), "tenant", "phone", "last_error")
        if not tenant:
            return
        data = {"session_id": session_id, "phone": phone, "status": status,
                "previous": previous or None, "at": round(time.time(), 3),
                "detail": last_error or None}
        emit(r, tenant, session_id, [new_event("evt_" + secrets.token_hex(12), SESSION_STATUS, data)])
    except Exception:  # noqa: BLE001
        log.exception("could not emit session.status for %s", session_id)


# --- message.inbound ---------------------------------------------------------------------------

def inbound_event_id(session_id: str, entry: dict[str, Any]) -> str:
    """Stable for one WhatsApp message: a worker that reports it twice yields one event id."""
    wa_id = entry.get("wa_id")
    if not wa_id:
        return "evt_" + secrets.token_hex(12)
    return "evt_in_" + hashlib.sha256(f"{session_id}:{wa_id}".encode()).hexdigest()[:24]


def inbound_received(r: redis.Redis, session: dict, entry: dict[str, Any]) -> None:
    """Emit message.inbound for a message a person wrote to one of the tenant's sessions."""
    try:
        found = inbound.clean(entry)
        data = {"session_id": session["id"], "to": session.get("phone"), "from": found["from"],
                "text": found["text"], "media": found["media"], "wa_id": found["wa_id"] or None,
                "at": found["at"]}
        emit(r, session["tenant"], session["id"],
             [new_event(inbound_event_id(session["id"], entry), MESSAGE_INBOUND, data)])
    except Exception:  # noqa: BLE001
        log.exception("could not emit message.inbound for session %s", session.get("id"))
