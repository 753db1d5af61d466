"""Endpoints for session workers: signed events (POST /api/webhook) and the outbox."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app.errors import ApiError
from waorch.core import settings
from waorch.core.redis_client import get_redis
from waorch.fleet import worker_events
from waorch.policy.pacing import pace_for
from waorch.sending import outbox
from waorch.sessions.worker_auth import WorkerAuthError, verify_worker_request

blp = Blueprint("worker", __name__, url_prefix="/api", description="Session worker endpoints")

EVENTS = ("QR", "PAIR_CODE", "CONNECTED", "PING", "ERROR", "MESSAGE_STATUS", "INBOUND",
          "RESTRICTED", "STOPPING")


class WorkerBodySchema(Schema):
    # signed bodies also carry session_id and nonce, checked by verify_worker_request
    class Meta:
        unknown = EXCLUDE


class WebhookSchema(WorkerBodySchema):
    session_id = fields.String(required=True)
    nonce = fields.String(required=True, validate=validate.Length(max=64))
    event = fields.String(required=True, validate=validate.OneOf(EVENTS))
    at = fields.Float(load_default=None)
    data = fields.Dict(load_default=dict)


class AckSchema(WorkerBodySchema):
    lease_token = fields.String(required=True, validate=validate.Length(max=64))
    wa_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    sent_at = fields.Float(load_default=None)


class NackSchema(WorkerBodySchema):
    lease_token = fields.String(required=True, validate=validate.Length(max=64))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=64))
    retryable = fields.Boolean(load_default=True)
    detail = fields.String(load_default="", validate=validate.Length(max=2000))


def _verified(path_session: str | None = None) -> tuple[dict, dict]:
    try:
        return verify_worker_request(get_redis(), request.get_data(cache=True),
                                     request.headers.get("X-Timestamp"),
                                     request.headers.get("X-Signature"), path_session)
    except WorkerAuthError as exc:
        raise ApiError(401, "unauthorized", f"worker request refused: {exc}") from None


def _load(schema: Schema, payload: dict) -> dict:
    try:
        return schema.load(payload)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", "the request did not validate",
                       exc.normalized_messages()) from None


@blp.route("/webhook", methods=["POST"])
@blp.response(204)
def worker_webhook():
    """A session worker reports an event (HMAC-signed with its session secret)."""
    session, payload = _verified()
    event = _load(WebhookSchema(), payload)
    worker_events.ingest(get_redis(), session, event["event"], event["data"], event["at"])
    return Response(status=204)


@blp.route("/worker/sessions/<string:session_id>/outbox/claim", methods=["POST"])
@blp.response(200)
def claim(session_id: str):
    """The worker's next due message (long-poll up to `wait` seconds), or 204."""
    session, payload = _verified(session_id)
    try:
        wait = float(payload.get("wait", 0))
    except (TypeError, ValueError):
        raise ApiError(422, "validation_error", "wait must be a number", {"wait": ["number"]}) from None
    wait = min(max(wait, 0.0), settings.get().claim_wait)
    result = outbox.claim_waiting(get_redis(), session_id, pace_for(session), wait)
    if result.outcome != "claimed":
        return Response(status=204)
    return result.message


@blp.route("/worker/sessions/<string:session_id>/outbox/<string:msg_id>/ack", methods=["POST"])
@blp.response(204)
def ack(session_id: str, msg_id: str):
    """The worker sent the message; records WhatsApp's id (idempotent)."""
    _, payload = _verified(session_id)
    body = _load(AckSchema(), payload)
    if outbox.ack(get_redis(), session_id, msg_id, body["lease_token"], body["wa_id"],
                  body["sent_at"]) == "unknown":
        raise ApiError(404, "not_found", "no such message")
    return Response(status=204)


@blp.route("/worker/sessions/<string:session_id>/outbox/<string:msg_id>/nack", methods=["POST"])
@blp.response(204)
def nack(session_id: str, msg_id: str):
    """The worker could not send the message."""
    _, payload = _verified(session_id)
    body = _load(NackSchema(), payload)
    outbox.nack(get_redis(), session_id, msg_id, body["lease_token"], body["reason"],
                body["retryable"], body["detail"])
    return Response(status=204)
