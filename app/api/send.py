"""POST /api/send and /api/send/batch."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request
from flask_smorest import Blueprint
from marshmallow import ValidationError

from app.auth import current_principal, requires
from app.errors import ApiError
from app.schemas import AcceptedSchema, BatchAcceptedSchema, BatchSchema, SendSchema
from waorch.core import settings
from waorch.core.redis_client import get_redis
from waorch.policy import suppressions
from waorch.sending import accept
from waorch.sending.accept import accept_and_dispatch
from waorch.tenants import ratelimit

blp = Blueprint("send", __name__, url_prefix="/api", description="Send messages")

_IDEMPOTENCY_HEADER = "Idempotency-Key"
SUPPRESSED = "suppressed: the recipient opted out (see /api/suppressions)"


@dataclass(frozen=True)
class Idempotency:
    """This request's Idempotency-Key (None without one) and the hash of its body."""

    key: str | None
    payload_hash: str


def _idempotency() -> Idempotency:
    key = request.headers.get(_IDEMPOTENCY_HEADER)
    if key is None:
        return Idempotency(None, "")
    key = key.strip()
    if not key or len(key) > 200 or not key.isprintable():
        raise ApiError(400, "bad_request", "Idempotency-Key must be 1-200 printable characters",
                       {_IDEMPOTENCY_HEADER: ["invalid"]})
    return Idempotency(key, accept.body_hash(request.get_json()))


def _rate_limit(tenant: str, cost: int) -> None:
    wait = ratelimit.take(get_redis(), tenant, cost)
    if wait:
        raise ApiError(429, "rate_limited", "too many messages, slow down",
                       headers={"Retry-After": ratelimit.retry_after_header(wait)})


def _answer(response: dict, replayed: bool):
    return response, 202, {"Idempotent-Replayed": "true"} if replayed else {}


def _conflict() -> ApiError:
    return ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different body")


def _replay(idem: Idempotency):
    """The first answer again when this Idempotency-Key was seen with this body, before any check
    that could answer differently today (an opt-out since, the rate limit)."""
    if idem.key is None:
        return None
    try:
        first = accept.remembered(get_redis(), current_principal().tenant, idem.key,
                                    idem.payload_hash)
    except accept.IdempotencyConflict:
        raise _conflict() from None
    return None if first is None else _answer(first, True)


def _accept(items: list[dict], build_response, idem: Idempotency):
    principal = current_principal()
    _rate_limit(principal.tenant, len(items))
    try:
        accepted = accept_and_dispatch(get_redis(), principal.tenant, items, build_response, idem.key,
                                       idem.payload_hash)
    except accept.IdempotencyConflict:
        raise _conflict() from None
    return _answer(accepted.response, accepted.replayed)


@blp.route("/send", methods=["POST"])
@requires("send")
@blp.arguments(SendSchema)
@blp.response(202, AcceptedSchema)
@blp.alt_response(409, description="Idempotency-Key reused with another body")
@blp.alt_response(429, description="rate limited; see Retry-After")
def send(item: dict):
    """Accept one message for sending; answers 202 with its id (422 `suppressed` for an opt-out)."""
    idem = _idempotency()
    replay = _replay(idem)
    if replay:
        return replay
    if suppressions.is_suppressed(get_redis(), current_principal().tenant, item["to"]):
        raise ApiError(422, "suppressed", "the recipient opted out of messages from this tenant",
                       {"to": [SUPPRESSED]})
    return _accept([item], lambda ids: {"id": ids[0], "status": "queued"}, idem)


@blp.route("/send/batch", methods=["POST"])
@requires("send")
@blp.arguments(BatchSchema)
@blp.response(202, BatchAcceptedSchema)
def send_batch(batch: dict):
    """Accept up to WAORCH_BATCH_MAX messages; invalid ones are listed in `rejected`."""
    idem = _idempotency()
    replay = _replay(idem)
    if replay:
        return replay
    raw = batch["messages"]
    limit = settings.get().batch_max
    if len(raw) > limit:
        raise ApiError(422, "validation_error", f"at most {limit} messages per batch",
                       {"messages": [f"at most {limit} messages"]})
    schema = SendSchema()
    valid, rejected, loaded = [], [], []
    for index, item in enumerate(raw):
        try:
            loaded.append((index, schema.load(item)))
        except ValidationError as exc:
            rejected.append({"index": index, "errors": exc.normalized_messages()})
    blocked = suppressions.suppressed_among(get_redis(), current_principal().tenant,
                                            [item["to"] for _, item in loaded])
    for index, item in loaded:
        if item["to"] in blocked:
            rejected.append({"index": index, "errors": {"to": [SUPPRESSED]}})
        else:
            valid.append(item)
    rejected.sort(key=lambda entry: entry["index"])
    if not valid:
        raise ApiError(422, "validation_error", "no message in the batch is valid",
                       {"messages": {str(r["index"]): r["errors"] for r in rejected}})
    return _accept(valid, lambda ids: {"ids": ids, "rejected": rejected}, idem)
