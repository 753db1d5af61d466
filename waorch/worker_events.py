"""What the orchestrator does with a worker's webhook event."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import redis

from waorch import client_events, keys, outbox, recipient_protection, sessions, trust

log = logging.getLogger("waorch.events")
INBOUND_KEEP = 1000  # inbound messages kept per session


def finite_time(value: Any, default: float) -> float:
    """A worker-given unix time if it is a finite number, else `default` (workers are not trusted)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def ingest(r: redis.Redis, session: dict, event: str, data: dict[str, Any], at: float | None) -> None:
    """Apply one verified worker event (receipts and inbound here, session state in sessions)."""
    at = time.time() if at is None else at
    if event == "MESSAGE_STATUS":
        wa_id, status = str(data.get("wa_id", "")), data.get("status")
        if wa_id and status in ("delivered", "read"):
            outbox.record_receipt(r, session["id"], wa_id, status, finite_time(data.get("at"), at))
        return
    if event == "INBOUND":
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
        return
    sessions.apply_worker_event(r, session["id"], event, data, at)
    trust.after_worker_event(r, session, event, data, at)  # restriction history, neighbour bans
