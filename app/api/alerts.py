"""Alerts API (admin): the active alerts, the recent alert events and the sinks' delivery state."""

from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import requires
from waorch.alerts import delivery as alert_delivery
from waorch.alerts import events as alert_events
from waorch.core.redis_client import get_redis

blp = Blueprint("alerts", __name__, url_prefix="/api/alerts",
                description="Operator alerts: session down, proxy burned, low inventory, bursts, backups")


class AlertEventSchema(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "session_down | proxy_burned | low_inventory | "
                                                  "burst_detected | backup_failed | session_restricted"})
    subject = fields.String(metadata={"description": "what it is about: a session id, proxy id, ..."})
    state = fields.String(metadata={"description": "raised | resolved"})
    severity = fields.String(metadata={"description": "info | warning | critical"})
    message = fields.String()
    data = fields.Dict()
    at = fields.Float()


class SinkStatusSchema(Schema):
    sink = fields.String(metadata={"description": "telegram | webhook"})
    pending = fields.Integer(metadata={"description": "events not delivered yet"})
    failures = fields.Integer(metadata={"description": "consecutive failed attempts"})
    retry_at = fields.Float(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_ok = fields.Float(allow_none=True)
    delivered = fields.Integer()
    coalesced = fields.Integer(metadata={"description": "events sent inside rate-limit summaries"})
    gave_up = fields.Integer(metadata={"description": "events dropped after WAORCH_ALERT_RETRY_WINDOW"})


class AlertsSchema(Schema):
    active = fields.List(fields.Nested(AlertEventSchema), metadata={"description": "oldest first"})
    events = fields.List(fields.Nested(AlertEventSchema), metadata={"description": "newest first"})
    sinks = fields.List(fields.Nested(SinkStatusSchema))


class AlertsQuerySchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=alert_events.EVENTS_CAP))


@blp.route("", methods=["GET"])
@requires("admin")
@blp.arguments(AlertsQuerySchema, location="query")
@blp.response(200, AlertsSchema)
def list_alerts(query: dict):
    """Active alerts, the most recent alert events (raised and resolved) and each sink's state."""
    r = get_redis()
    return {"active": alert_events.active_alerts(r),
            "events": alert_events.list_events(r, query["limit"]),
            "sinks": alert_delivery.sink_status(r)}
