"""Suppression list API: recipients a tenant must not message (opt-outs and operator entries).

Scopes: listing needs `read`; adding needs `send` (anyone who may send may also stop sending);
lifting a suppression overrides a person's opt-out and needs `admin`. Admin keys may name another
tenant with `?tenant=`; other keys always act on their own tenant.
"""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import acting_tenant, requires
from app.errors import ApiError
from app.schemas import PhoneField
from waorch.core import phones
from waorch.core.redis_client import get_redis
from waorch.policy import suppressions

blp = Blueprint("suppressions", __name__, url_prefix="/api/suppressions",
                description="Opt-out list: sends to these recipients fail with reason `suppressed`")


class SuppressionSchema(Schema):
    phone = fields.String(metadata={"description": "E.164 digits"})
    reason = fields.String()
    source = fields.String(metadata={"description": "`api`, or `inbound:<session>` for an opt-out reply"})
    at = fields.Float(allow_none=True)


class SuppressionCreateSchema(Schema):
    phone = PhoneField(required=True, metadata={"description": "international format, e.g. +14155550123"})
    reason = fields.String(load_default="", validate=validate.Length(max=suppressions.MAX_REASON))


class SuppressionListSchema(Schema):
    items = fields.List(fields.Nested(SuppressionSchema))
    next_cursor = fields.String(allow_none=True)
    count = fields.Integer(metadata={"description": "suppressions of the tenant in total"})


class ListQuerySchema(Schema):
    cursor = fields.String(load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    tenant = fields.String(load_default=None, validate=validate.Length(min=1, max=64))


def _tenant(requested: str | None = None) -> str:
    requested = requested if requested is not None else request.args.get("tenant")
    return acting_tenant(requested, "only admin keys may act on another tenant's list")


def _phone(raw: str) -> str:
    try:
        return phones.normalize(raw)
    except phones.InvalidPhone as exc:
        raise ApiError(422, "validation_error", str(exc), {"phone": [str(exc)]}) from None


@blp.route("", methods=["GET"])
@requires("read")
@blp.arguments(ListQuerySchema, location="query")
@blp.response(200, SuppressionListSchema)
def list_(query: dict):
    """The tenant's suppressed recipients, a page at a time (`next_cursor` back as `cursor`)."""
    cursor = query.get("cursor") or "0"
    if not cursor.isdigit():
        raise ApiError(422, "validation_error", "bad cursor", {"cursor": ["not a cursor"]})
    tenant = _tenant(query.get("tenant"))
    r = get_redis()
    items, next_cursor = suppressions.list_page(r, tenant, int(cursor), query["limit"])
    return {"items": items, "next_cursor": None if next_cursor is None else str(next_cursor),
            "count": suppressions.count(r, tenant)}


@blp.route("", methods=["POST"])
@requires("send")
@blp.arguments(SuppressionCreateSchema)
@blp.response(201, SuppressionSchema)
@blp.alt_response(200, description="the recipient was already suppressed (the first entry is kept)")
def create(body: dict):
    """Suppress a recipient: queued and scheduled messages to them fail with reason `suppressed`."""
    record, created = suppressions.add(get_redis(), _tenant(), body["phone"], body["reason"], source="api")
    return record, 201 if created else 200


@blp.route("/<phone>", methods=["GET"])
@requires("read")
@blp.response(200, SuppressionSchema)
def show(phone: str):
    """One suppression, 404 when the recipient is not suppressed."""
    record = suppressions.get(get_redis(), _tenant(), _phone(phone))
    if record is None:
        raise ApiError(404, "not_found", "this recipient is not suppressed")
    return record


@blp.route("/<phone>", methods=["DELETE"])
@requires("admin")
@blp.response(204)
def delete(phone: str):
    """Lift a suppression (the person may be messaged again): an operator's decision."""
    if not suppressions.remove(get_redis(), _tenant(), _phone(phone)):
        raise ApiError(404, "not_found", "this recipient is not suppressed")
    return Response(status=204)
