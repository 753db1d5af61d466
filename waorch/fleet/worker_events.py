"""What the orchestrator does with a verified worker event (POST /api/webhook).

One table maps each event to its handler; a handler changes the registry, then does what follows
(alerts, trust, rerouting, proxy evidence). Events nobody handles are only recorded in the
session's history.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis

from waorch.alerts import events as alert_events
from waorch.core import keys
from waorch.fleet import lifecycle, proxy_failover
from waorch.policy import recipient_protection, trust
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.sessions.registry import SessionRecord
from waorch.webhooks import events as client_events

log = logging.getLogger(__name__)

INBOUND_KEEP = 1000  # inbound messages kept per session
DEFAULT_PAUSE = 3600.0  # RESTRICTED without an `until`: pause this long
# DEVICE_MISSING: the registry's device is not in the PostgreSQL session store; it pairs again
_ERROR_STATUS = {"BANNED": "banned", "LOGGED_OUT": "logged_out", "DEVICE_MISSING": "logged_out"}
_SECRET_DATA = ("qr", "code")  # login material: kept out of the event history

Change = tuple[str, str] | None  # (old status, new status) of the registry; None: unknown session
Handler = Callable[[redis.Redis, SessionRecord, dict[str, Any], float, dict], Change]


def finite_time(value: Any, default: float) -> float:
    """A worker-given unix time if it is a finite number, else `default` (workers are not trusted)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def ingest(r: redis.Redis, session: SessionRecord, event: str, data: dict[str, Any],
           at: float | None) -> Change:
    """Apply one verified worker event of `session` (its record as it was before the event)."""
    at = time.time() if at is None else at
    data = data if isinstance(data, dict) else {}
    record = sessions.event_record(event, {k: v for k, v in data.items() if k not in _SECRET_DATA}, at)
    return HANDLERS.get(event, _record_only)(r, session, data, at, record)


def apply(r: redis.Redis, session_id: str, event: str, data: dict[str, Any],
          at: float | None = None) -> Change:
    """`ingest` for a session known by id (tools, tests); None when it does not exist."""
    session = sessions.get_session(r, session_id)
    return None if session is None else ingest(r, session, event, data, at)


def _record_only(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    return sessions.transition(r, session["id"], event=record)


def on_ping(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    counters = {name: int(value) for name in ("sent", "failed", "claimed", "uptime", "pid")
                if isinstance(value := data.get(name), int | float) and not isinstance(value, bool)
                and math.isfinite(value)}
    return sessions.record_ping(r, session["id"], bool(data.get("connected")), counters, record)


def on_qr(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    return sessions.transition(r, session["id"], "pairing", event=record, qr=str(data.get("qr", ""))[:4096])


def on_pair_code(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    return sessions.transition(r, session["id"], "pairing", event=record,
                               fields={"pair_code": str(data.get("code", ""))[:32]})


def on_connected(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    changed = sessions.transition(r, session["id"], "connected", event=record, clear_qr=True, fields={
        "jid": str(data.get("jid", ""))[:128], "connected_at": at, "last_error": "",
        "pair_code": "", "last_ping": at})
    if changed:
        alert_events.resolve(r, alert_events.SESSION_DOWN, session["id"],
                             f"session {session['id']} connected again")
    return changed


def on_error(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    session_id = session["id"]
    code = str(data.get("code") or "UNKNOWN")[:64]
    detail = str(data.get("detail") or "")[:300]
    status = _ERROR_STATUS.get(code, "error")
    # A banned account needs a person (appeal), not a restart loop. A logged-out one keeps its
    # worker: it pairs again, and its QR is what the person needs to see.
    desired = "stopped" if code == "BANNED" else ""
    changed = sessions.transition(r, session_id, status, event=record, desired=desired,
                                  fields={"last_error": f"{code}: {detail}" if detail else code})
    if changed is None:
        return None
    lifecycle.after_change(r, session_id, changed)
    if code in _ERROR_STATUS:
        alert_events.raise_alert(r, alert_events.SESSION_DOWN, session_id,
                                 f"session {session_id} is {status.replace('_', ' ')}",
                                 severity="critical", data={"code": code})
    if code == "PROXY_FAILED" and session.get("proxy_url"):
        proxy_failover.worker_evidence(r, session["proxy_url"], detail or code)
    if code == "BANNED":
        trust.after_ban(r, session_id, now=at)  # neighbours on the same proxy step down
    return changed


def on_stopping(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    current = sessions.get_session(r, session["id"])
    # a session being moved (waorch.fleet.moving) is not stopped: its messages wait for it
    stopped = current and current.get("desired") == "stopped" and not current.get("moving")
    status = "stopped" if stopped else "disconnected"
    changed = sessions.transition(r, session["id"], status, event=record)
    lifecycle.after_change(r, session["id"], changed)
    return changed


def on_restricted(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    until = data.get("until")
    until = float(until) if isinstance(until, int | float) and math.isfinite(until) and until > at \
        else at + DEFAULT_PAUSE
    reason = str(data.get("reason") or "")[:200]
    fields: dict[str, Any] = {"paused_until": f"{until:.3f}", "restriction": reason}
    if session.get("trust_level") != "restricted":
        # WhatsApp's own warning: slow down for good, not just until the pause ends.
        fields.update({"trust_level": "restricted", "trust_before_restriction": session.get("trust_level")})
    changed = sessions.transition(r, session["id"], event=record, fields=fields)
    if changed is None:
        return None
    lifecycle.after_change(r, session["id"], changed, paused=True)
    alert_events.raise_alert(r, alert_events.SESSION_RESTRICTED, session["id"],
                             f"WhatsApp restricted session {session['id']}; sending paused",
                             data={"until": until, "reason": data.get("reason")})
    trust.note_restricted(r, session["id"], session.get("trust_level") or "", reason, until, now=at)
    return changed


def on_message_status(r: redis.Redis, session: SessionRecord, data: dict, at: float,
                      record: dict) -> Change:
    wa_id, status = str(data.get("wa_id", "")), data.get("status")
    if wa_id and status in ("delivered", "read"):
        outbox.record_receipt(r, session["id"], wa_id, status, finite_time(data.get("at"), at))
    return None


def on_inbound(r: redis.Redis, session: SessionRecord, data: dict, at: float, record: dict) -> Change:
    entry = {"session": session["id"], "to": session["phone"], "from": data.get("from"),
             "text": data.get("text", ""), "wa_id": data.get("wa_id"),
             "at": data.get("at") or at, "media": data.get("media")}
    pipe = r.pipeline(transaction=True)
    pipe.lpush(keys.session_inbound(session["id"]), json.dumps(entry))
    pipe.ltrim(keys.session_inbound(session["id"]), 0, INBOUND_KEEP - 1)
    # its client event is pending in the same transaction: a crash before the hook below
    # leaves it to the sweep instead of losing it
    event_id = client_events.mark_inbound(pipe, session, entry)
    pipe.execute()
    # an opt-out reply suppresses its sender for the tenant before anything else is sent
    recipient_protection.handle_inbound(r, session, str(data.get("from") or ""),
                                        str(data.get("text") or ""), at)
    client_events.inbound_received(r, event_id)
    return None


HANDLERS: dict[str, Handler] = {
    "PING": on_ping,
    "QR": on_qr,
    "PAIR_CODE": on_pair_code,
    "CONNECTED": on_connected,
    "ERROR": on_error,
    "STOPPING": on_stopping,
    "RESTRICTED": on_restricted,
    "MESSAGE_STATUS": on_message_status,
    "INBOUND": on_inbound,
}
