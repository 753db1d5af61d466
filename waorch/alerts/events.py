"""Alert events (session down, proxy burned, low inventory, ...): stored in Redis for the sinks.

An alert has a `kind` and a `subject` (what it is about). While it is active a second `raise_alert`
for the same kind and subject is a no-op, and `resolve` records a recovery notice. Each new event
also enters the outbox of every configured sink (Telegram, webhook) in the same MULTI, and a
delivery task is published; waorch.alerts.delivery sends it (docs/alerts.md).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis

from waorch.alerts import sinks as alert_sinks
from waorch.core import jobs, keys

log = logging.getLogger(__name__)

ALERT_EVENTS = keys.ALERT_EVENTS  # capped LIST of JSON events, newest first
ALERTS_ACTIVE = keys.ALERTS_ACTIVE  # HASH "<kind>:<subject>" -> JSON of the raising event
ALERTS_CHANNEL = keys.ALERTS_CHANNEL  # pub/sub channel carrying every event as JSON
EVENTS_CAP = 1000

SESSION_DOWN = "session_down"
PROXY_BURNED = "proxy_burned"
LOW_INVENTORY = "low_inventory"
SESSION_RESTRICTED = "session_restricted"
BURST_DETECTED = "burst_detected"
BACKUP_FAILED = "backup_failed"


def _record(r: redis.Redis, event: dict[str, Any]) -> None:
    text = json.dumps(event, sort_keys=True)
    sinks = alert_sinks.enabled_names()
    pipe = r.pipeline(transaction=True)
    pipe.lpush(ALERT_EVENTS, text)
    pipe.ltrim(ALERT_EVENTS, 0, EVENTS_CAP - 1)
    for name in sinks:
        pipe.zadd(keys.alert_outbox(name), {text: event["at"]})
    pipe.publish(ALERTS_CHANNEL, text)
    pipe.execute()
    log.warning("alert %s %s: %s", event["state"], event["kind"], event["message"])
    if sinks:
        request_delivery()


def request_delivery() -> bool:
    """Publish a delivery task (queue `events`); False when that failed (the beat sweep covers it)."""
    try:
        # no publish retries: callers may be serving a request; the sweep runs every few seconds
        jobs.publish("tasks.alerts.deliver", queue="events", retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - broker trouble of any kind: the beat sweep delivers
        log.warning("could not queue alert delivery: %s", exc.__class__.__name__)
        return False


def raise_alert(r: redis.Redis, kind: str, subject: str, message: str,
                severity: str = "warning", data: dict | None = None) -> dict | None:
    """Record an alert unless the same one is already active; returns the new event or None."""
    event = {"id": uuid.uuid4().hex, "kind": kind, "subject": subject, "state": "raised",
             "severity": severity, "message": message, "data": data or {}, "at": time.time()}
    if not r.hsetnx(ALERTS_ACTIVE, f"{kind}:{subject}", json.dumps(event, sort_keys=True)):
        return None
    _record(r, event)
    return event


def resolve(r: redis.Redis, kind: str, subject: str, message: str) -> dict | None:
    """Record a recovery notice for an active alert; None when it was not active."""
    if not r.hdel(ALERTS_ACTIVE, f"{kind}:{subject}"):
        return None
    event = {"id": uuid.uuid4().hex, "kind": kind, "subject": subject, "state": "resolved",
             "severity": "info", "message": message, "data": {}, "at": time.time()}
    _record(r, event)
    return event


def list_events(r: redis.Redis, limit: int = 100) -> list[dict]:
    """The most recent alert events, newest first."""
    return [json.loads(item) for item in r.lrange(ALERT_EVENTS, 0, max(0, limit - 1))]


def active_alerts(r: redis.Redis) -> list[dict]:
    """Alerts raised and not resolved yet."""
    return sorted((json.loads(v) for v in r.hvals(ALERTS_ACTIVE)), key=lambda e: e["at"])
