"""GET /api/sessions/{id}/inbound: what people wrote to one of the caller's sessions."""

from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import requires, visible_session
from waorch.core.redis_client import get_redis
from waorch.messages import inbound

blp = Blueprint("inbound", __name__, url_prefix="/api/sessions", description="Inbound messages")


class InboundQuerySchema(Schema):
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=100000))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class InboundSchema(Schema):
    session = fields.String()
    to = fields.String(allow_none=True)
    sender = fields.String(data_key="from", attribute="from", allow_none=True)
    text = fields.String(allow_none=True)
    wa_id = fields.String(allow_none=True)
    at = fields.Float(allow_none=True)
    media = fields.Dict(allow_none=True)


class InboundPageSchema(Schema):
    items = fields.List(fields.Nested(InboundSchema))
    next_offset = fields.Integer(allow_none=True)


@blp.route("/<string:session_id>/inbound", methods=["GET"])
@requires("read")
@blp.arguments(InboundQuerySchema, location="query")
@blp.response(200, InboundPageSchema)
def list_inbound(query: dict, session_id: str):
    """Inbound messages of the session, newest first (the last 1000 are kept)."""
    visible_session(session_id)
    items, next_offset = inbound.list_inbound(get_redis(), session_id, query["offset"], query["limit"])
    return {"items": items, "next_offset": next_offset}
