"""GET /api/messages and /api/messages/{id}."""

from __future__ import annotations

from flask_smorest import Blueprint

from app.auth import requires, tenant_filter
from app.errors import ApiError
from app.schemas import MessageListQuerySchema, MessagePageSchema, MessageSchema
from waorch.core.redis_client import get_redis
from waorch.messages import records as messages

blp = Blueprint("messages", __name__, url_prefix="/api/messages", description="Message states")


@blp.route("", methods=["GET"])
@requires("read")
@blp.arguments(MessageListQuerySchema, location="query")
@blp.response(200, MessagePageSchema)
def list_messages(query: dict):
    """Messages newest first; pass `next_cursor` back as `cursor` until it is null.

    With filters a page may hold fewer than `limit` messages, even none, and still a `next_cursor`:
    one request looks at no more than 5000 messages."""
    items, next_cursor = messages.list_messages(
        get_redis(), tenant_filter(), status=query.get("status"), session=query.get("session"),
        to=query.get("to"), cursor=query.get("cursor"), limit=query["limit"])
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/<string:msg_id>", methods=["GET"])
@requires("read")
@blp.response(200, MessageSchema)
def get_message(msg_id: str):
    """One message with its state history."""
    found = messages.get_message(get_redis(), msg_id[:64], tenant_filter())
    if found is None:
        raise ApiError(404, "not_found", "no such message")
    return found
