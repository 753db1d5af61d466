"""Client webhooks (SPEC section 4): subscriptions of the key's tenant and their dead letters.

Scope `read`: a subscription only pushes what the tenant may read anyway. Tenants see and touch
only their own subscriptions and dead letters; admin keys see all (and may subscribe for another
tenant). The signing secret is never shown again after creation.
"""

from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.auth import acting_tenant, requires, tenant_filter
from app.errors import ApiError
from waorch.core import zset_pages
from waorch.core.redis_client import get_redis
from waorch.webhooks import dead_letters
from waorch.webhooks import subscriptions as client_webhooks
from waorch.webhooks.subscriptions import EVENT_TYPES, SECRET_MAX, SECRET_MIN, WebhookUrlError

blp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks",
                description="Client webhooks: signed event deliveries to your own endpoint")


class WebhookUrlField(fields.String):
    """An https URL on a public address (or one WAORCH_WEBHOOK_ALLOWLIST permits)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return client_webhooks.check_url(text).url
        except WebhookUrlError as exc:
            raise ValidationError(str(exc)) from None


def _secret_field(description: str) -> fields.String:
    return fields.String(validate=[validate.Length(min=SECRET_MIN, max=SECRET_MAX),
                                   validate.Regexp(r"^[\x21-\x7e]+$", error="printable ASCII, no spaces")],
                         metadata={"description": description})


def _events_field(description: str) -> fields.List:
    return fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)),
                       validate=validate.Length(min=1, max=len(EVENT_TYPES)),
                       metadata={"description": description})


class WebhookCreateSchema(Schema):
    url = WebhookUrlField(required=True, metadata={"description": "https://... (http only if allow-listed)"})
    secret = _secret_field("HMAC key for X-Waorch-Signature; generated if omitted")
    events = _events_field("default: all event types")
    tenant = fields.String(validate=validate.Length(min=1, max=64),
                           metadata={"description": "admin keys only: subscribe for another tenant"})


class WebhookUpdateSchema(Schema):
    url = WebhookUrlField(metadata={"description": "the new endpoint; queued events go there"})
    secret = _secret_field("the new HMAC key; deliveries from now on are signed with it")
    rotate_secret = fields.Boolean(metadata={"description": "true: waorch generates a new secret and "
                                                            "returns it in this answer only"})
    events = _events_field("the event types to queue from now on")

    @validates_schema
    def _one_change(self, data, **kwargs):
        if not any(data.get(name) for name in ("url", "secret", "rotate_secret", "events")):
            raise ValidationError("give url, secret, rotate_secret or events")
        if data.get("secret") and data.get("rotate_secret"):
            raise ValidationError("give a secret or rotate_secret, not both", field_name="secret")


class DeliveryStatusSchema(Schema):
    pending = fields.Integer()
    delivered = fields.Integer()
    last_delivery_at = fields.Float(allow_none=True)
    failing_since = fields.Float(allow_none=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.Float(allow_none=True)


class WebhookSchema(Schema):
    id = fields.String()
    tenant = fields.String()
    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.Float(allow_none=True)
    status = fields.String(metadata={"description": "active | disabled (the endpoint answered 410 Gone)"})
    disabled_at = fields.Float(allow_none=True)
    disabled_reason = fields.String(allow_none=True)
    delivery = fields.Nested(DeliveryStatusSchema)


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "only when generated, and only in this answer"})


class WebhookListSchema(Schema):
    webhooks = fields.List(fields.Nested(WebhookSchema))
    count = fields.Integer()


class DeadLetterSchema(Schema):
    id = fields.String()
    tenant = fields.String()
    webhook_id = fields.String()
    url = fields.String()
    event_id = fields.String()
    event = fields.Dict(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    queued_at = fields.Float(allow_none=True)
    dead_at = fields.Float(allow_none=True)


class DeadLetterPageSchema(Schema):
    items = fields.List(fields.Nested(DeadLetterSchema))
    next_cursor = fields.String(allow_none=True)


class DeadLetterQuerySchema(Schema):
    cursor = fields.String(validate=validate.Regexp(zset_pages.CURSOR_PATTERN))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class RedeliveredSchema(Schema):
    id = fields.String()
    status = fields.String()


def _with_secret(view: dict, generated: str | None) -> dict:
    """The answer to a create or update: the view, and the secret only when waorch generated it."""
    return {**view, "secret": generated} if generated else view


def _view_or_404(record: dict | None) -> dict:
    """The described webhook found for this key's tenant; 404 when there is none."""
    if record is None:
        raise ApiError(404, "not_found", "no such webhook")
    return client_webhooks.describe(get_redis(), record)


@blp.route("", methods=["POST"])
@requires("read")
@blp.arguments(WebhookCreateSchema)
@blp.response(201, WebhookCreatedSchema)
@blp.alt_response(409, description="the tenant has the most webhooks allowed")
def create(body: dict):
    """Subscribe an endpoint to events; the secret is returned only if waorch generated it."""
    tenant = acting_tenant(body.get("tenant"), "only admin keys may subscribe for another tenant")
    r = get_redis()
    try:
        view, generated = client_webhooks.create(r, tenant, body["url"], body.get("events"),
                                                 body.get("secret"))
    except WebhookUrlError as exc:
        raise ApiError(422, "validation_error", "the request did not validate", {"url": [str(exc)]}) from None
    except client_webhooks.TooManyWebhooks as exc:
        raise ApiError(409, "too_many_webhooks", str(exc)) from None
    return _with_secret(view, generated)


@blp.route("", methods=["GET"])
@requires("read")
@blp.response(200, WebhookListSchema)
def list_():
    """The caller's webhooks (all for admin keys), with how delivery goes."""
    r = get_redis()
    found = [client_webhooks.describe(r, rec) for rec in client_webhooks.list_for(r, tenant_filter())]
    return {"webhooks": found, "count": len(found)}


@blp.route("/dead-letters", methods=["GET"])
@requires("read")
@blp.arguments(DeadLetterQuerySchema, location="query")
@blp.response(200, DeadLetterPageSchema)
def list_dead_letters(query: dict):
    """Events that ran out of retries, newest first; pass `next_cursor` back as `cursor`."""
    items, next_cursor = dead_letters.list_dead_letters(get_redis(), tenant_filter(),
                                                        query.get("cursor"), query["limit"])
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/dead-letters/<string:dl_id>/redeliver", methods=["POST"])
@requires("read")
@blp.response(202, RedeliveredSchema)
@blp.alt_response(409, description="its webhook was deleted or is disabled")
def redeliver(dl_id: str):
    """Queue a dead-lettered event again, with a fresh retry window."""
    try:
        done = dead_letters.redeliver(get_redis(), dl_id, tenant_filter())
    except dead_letters.DeadLetterGone as exc:
        raise ApiError(409, "webhook_gone", str(exc)) from None
    except dead_letters.WebhookDisabled as exc:
        raise ApiError(409, "webhook_disabled", str(exc)) from None
    if not done:
        raise ApiError(404, "not_found", "no such dead letter")
    return {"id": dl_id, "status": "queued"}


@blp.route("/<string:webhook_id>", methods=["GET"])
@requires("read")
@blp.response(200, WebhookSchema)
def show(webhook_id: str):
    """One webhook with how delivery goes."""
    return _view_or_404(client_webhooks.get(get_redis(), webhook_id, tenant_filter()))


@blp.route("/<string:webhook_id>", methods=["PATCH"])
@requires("read")
@blp.arguments(WebhookUpdateSchema)
@blp.response(200, WebhookCreatedSchema)
def update(body: dict, webhook_id: str):
    """Change the URL, the events and/or the secret; queued events keep their place."""
    try:
        updated = client_webhooks.update(
            get_redis(), webhook_id, tenant_filter(), body.get("url"), body.get("events"), body.get("secret"),
            bool(body.get("rotate_secret")))
    except WebhookUrlError as exc:
        raise ApiError(422, "validation_error", "the request did not validate", {"url": [str(exc)]}) from None
    if updated is None:
        raise ApiError(404, "not_found", "no such webhook")
    return _with_secret(*updated)


@blp.route("/<string:webhook_id>/enable", methods=["POST"])
@requires("read")
@blp.response(200, WebhookSchema)
def enable(webhook_id: str):
    """Deliver to a webhook again that was disabled because its endpoint answered 410 Gone."""
    return _view_or_404(client_webhooks.enable(get_redis(), webhook_id, tenant_filter()))


@blp.route("/<string:webhook_id>", methods=["DELETE"])
@requires("read")
@blp.response(204)
def delete(webhook_id: str):
    """Unsubscribe; events still queued for it are dropped."""
    if not client_webhooks.delete(get_redis(), webhook_id, tenant_filter()):
        raise ApiError(404, "not_found", "no such webhook")
    return "", 204
