"""GET /api/dashboard/overview (admin): the dashboard's figures no resource endpoint gives."""

from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import requires
from app.schemas import MessageSchema
from waorch.core.redis_client import get_redis
from waorch.fleet import overview as fleet_overview

blp = Blueprint("dashboard", __name__, url_prefix="/api/dashboard",
                description="Fleet overview for the dashboard (admin)")


class SessionLoadSchema(Schema):
    id = fields.String()
    routed = fields.Integer(metadata={"description": "routed, waiting for a send slot"})
    scheduled = fields.Integer(metadata={"description": "in the outbox with a send time"})
    claimed = fields.Integer(metadata={"description": "claimed by the worker, not acknowledged yet"})
    queue_depth = fields.Integer(metadata={"description": "routed + scheduled + claimed"})
    sends_24h = fields.Integer(metadata={"description": "sends in the last 24 h (the day budget's window)"})


class QueueTotalsSchema(Schema):
    unrouted = fields.Integer(metadata={"description": "accepted messages not routed to a session yet"})
    routed = fields.Integer()
    scheduled = fields.Integer()
    claimed = fields.Integer()
    celery = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "tasks waiting in each Celery queue"})
    celery_unacked = fields.Integer()
    dead_letters = fields.Integer(metadata={"description": "client webhook events out of retries"})


class MessageBriefSchema(MessageSchema):
    class Meta:
        exclude = ("text", "media", "history", "expires_at", "scheduled_for", "wa_id", "client_ref")

    text_preview = fields.String()
    tenant = fields.String(allow_none=True)


class OverviewQuerySchema(Schema):
    cursor = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**64 - 1), metadata={
        "description": "`sessions_cursor` of the previous answer: the next page of per-session figures"})
    limit = fields.Integer(load_default=fleet_overview.SESSIONS_PAGE,
                           validate=validate.Range(min=1, max=fleet_overview.SESSIONS_PAGE_MAX),
                           metadata={"description": "about this many sessions per page"})


class OverviewSchema(Schema):
    now = fields.Float(metadata={"description": "the server's unix time (for ages such as last ping)"})
    sessions = fields.List(fields.Nested(SessionLoadSchema), metadata={
        "description": "one page of sessions (about `limit`), in id order within the page"})
    sessions_total = fields.Integer(metadata={"description": "sessions in the fleet"})
    sessions_cursor = fields.Integer(allow_none=True, metadata={
        "description": "cursor of the next page of sessions; null when this was the last"})
    queues = fields.Nested(QueueTotalsSchema)
    recent_messages = fields.List(fields.Nested(MessageBriefSchema))
    recent_failures = fields.List(fields.Nested(MessageBriefSchema), metadata={
        "description": f"failed among the newest {fleet_overview.RECENT_SCANNED} messages"})


@blp.route("/overview", methods=["GET"])
@requires("admin")
@blp.arguments(OverviewQuerySchema, location="query")
@blp.response(200, OverviewSchema)
def overview(query: dict):
    """Per-session queue depths and 24 h sends (one page of sessions), queue totals from counters,
    recent messages and failures."""
    return fleet_overview.overview(get_redis(), cursor=query["cursor"], limit=query["limit"])
