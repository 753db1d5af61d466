"""Anti-ban policy API: the policy in force, and the trust level of a session (read and change).

Changing a trust level changes how fast an account may send: an operator's act (`admin` scope).
"""

from __future__ import annotations

import time

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.auth import requires, visible_session
from app.errors import ApiError
from waorch.core.redis_client import get_redis
from waorch.policy import pacing, trust
from waorch.policy import rules as policy
from waorch.sessions import registry as sessions

blp = Blueprint("policy", __name__, url_prefix="/api",
                description="Anti-ban policy and session trust levels")


class TrustChangeSchema(Schema):
    trust_level = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default="", validate=validate.Length(max=300))


class BudgetSchema(Schema):
    per_minute = fields.Float()
    per_day = fields.Integer()


class UsageSchema(Schema):
    last_minute = fields.Integer()
    last_day = fields.Integer()


class TrustSchema(Schema):
    session = fields.String()
    trust_level = fields.String()
    budget = fields.Nested(BudgetSchema, metadata={"description": "of the level in force"})
    used = fields.Nested(UsageSchema, metadata={"description": "claims in the last 60 s / 24 h"})
    cooldown_until = fields.Float(allow_none=True)
    cooldown_reason = fields.String(allow_none=True)
    paused_until = fields.Float(allow_none=True)
    history = fields.List(fields.Dict(), metadata={"description": "trust changes, newest first"})


def known_trust_level(level: str) -> str:
    """`level` if the anti-ban policy has it (docs/policy.md); 422 otherwise."""
    try:
        return policy.get().check_level(level)
    except policy.UnknownTrustLevel as exc:
        raise ApiError(422, "validation_error", f"unknown trust level {level!r}",
                       {"trust_level": [str(exc)]}) from None


def _view(session: dict) -> dict:
    r = get_redis()
    now = time.time()
    pol = policy.get()
    level = pol.level(session.get("trust_level"))
    used = pacing.usage(r, session["id"], now)
    paused = session.get("paused_until")
    return {
        "session": session["id"], "trust_level": session.get("trust_level") or level.name,
        "budget": {"per_minute": level.per_minute, "per_day": level.per_day},
        "used": {"last_minute": used["last_minute"], "last_day": used["last_day"]},
        "cooldown_until": used["cooldown_until"], "cooldown_reason": used["cooldown_reason"],
        "paused_until": paused if paused and paused > now else None,
        "history": trust.history(r, session["id"]),
    }


@blp.route("/policy", methods=["GET"])
@requires("read")
@blp.response(200)
def show_policy():
    """The anti-ban policy in force (trust levels, jitter, quiet hours, caps, bursts, review)."""
    return policy.get().as_dict()


@blp.route("/sessions/<session_id>/trust", methods=["GET"])
@requires("read")
@blp.response(200, TrustSchema)
def show_trust(session_id: str):
    """The session's trust level, its budget and use, cooldown or pause, and its trust history."""
    return _view(visible_session(session_id))


@blp.route("/sessions/<session_id>/trust", methods=["PUT"])
@requires("admin")
@blp.arguments(TrustChangeSchema)
@blp.response(200, TrustSchema)
def change_trust(body: dict, session_id: str):
    """Set the session's trust level (one of the policy's levels); recorded with its reason."""
    session = visible_session(session_id)
    level = known_trust_level(body["trust_level"])
    reason = body["reason"].strip() or "set by an operator"
    trust.set_level(get_redis(), session_id, level, reason, by="operator")
    return _view(sessions.get_session(get_redis(), session_id) or session)
