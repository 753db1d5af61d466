"""Sessions API (SPEC section 4): create, list, show, QR, restart, delete.

Scopes: reading needs `read`; creating, restarting and deleting sessions is an operator's act
(it spends proxy capacity and starts workers) and needs `admin`. Tenants see only their own
sessions; admin keys see all and may create a session for another tenant.
"""

from __future__ import annotations

import io
import json

import segno
from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from app.api.policy import known_trust_level
from app.auth import current_principal, requires, tenant_filter, visible_session
from app.errors import ApiError
from app.schemas import PhoneField
from waorch.core import keys
from waorch.core.redis_client import get_redis
from waorch.fleet import lifecycle
from waorch.sessions import profiles
from waorch.sessions import registry as sessions

blp = Blueprint("sessions", __name__, url_prefix="/api/sessions",
                description="WhatsApp sessions: one worker, one sticky proxy, one device profile each")


class SessionCreateSchema(Schema):
    phone = PhoneField(required=True, metadata={"description": "international format, e.g. +14155550123"})
    trust_level = fields.String(validate=validate.Length(min=1, max=32),
                                metadata={"description": "one of the policy's trust levels"})
    label = fields.String(validate=validate.Length(max=200), load_default="")
    tenant = fields.String(validate=validate.Length(min=1, max=64),
                           metadata={"description": "admin keys only: create for another tenant"})


class ProxyRefSchema(Schema):
    id = fields.String()
    url = fields.String(metadata={"description": "credentials redacted as ***"})


class CountersSchema(Schema):
    sent = fields.Integer()
    failed = fields.Integer()
    claimed = fields.Integer()


class SessionSchema(Schema):
    id = fields.String()
    tenant = fields.String()
    phone = fields.String()
    status = fields.String()
    desired = fields.String()
    label = fields.String()
    trust_level = fields.String()
    proxy = fields.Nested(ProxyRefSchema, allow_none=True)
    profile = fields.Dict()
    created_at = fields.Float(allow_none=True)
    started_at = fields.Float(allow_none=True)
    last_ping = fields.Float(allow_none=True)
    paused_until = fields.Float(allow_none=True)
    restarts = fields.Integer()
    jid = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    counters = fields.Nested(CountersSchema)


class SessionListSchema(Schema):
    sessions = fields.List(fields.Nested(SessionSchema))
    count = fields.Integer()


class QrSchema(Schema):
    qr = fields.String(allow_none=True)
    pair_code = fields.String(allow_none=True)


class EventsSchema(Schema):
    events = fields.List(fields.Dict())


@blp.route("", methods=["POST"])
@requires("admin")
@blp.arguments(SessionCreateSchema)
@blp.response(201, SessionSchema)
@blp.alt_response(409, description="the phone already has a session")
@blp.alt_response(503, description="no proxy (or device profile) capacity")
def create(body: dict):
    """Create a session: sticky proxy + profile allocated, worker started."""
    tenant = body.get("tenant") or current_principal().tenant
    if body.get("trust_level"):
        known_trust_level(body["trust_level"])
    try:
        session = lifecycle.create_session(get_redis(), tenant, body["phone"], body.get("trust_level"),
                                          body.get("label", ""))
    except sessions.SessionExists as exc:
        raise ApiError(409, "session_exists", str(exc), {"phone": ["already has a session"]}) from None
    except lifecycle.NoProxyCapacity as exc:
        raise ApiError(503, "no_proxy_capacity", str(exc)) from None
    except profiles.NoProfileCapacity as exc:
        raise ApiError(503, "no_profile_capacity", str(exc)) from None
    return sessions.public_view(session)


@blp.route("", methods=["GET"])
@requires("read")
@blp.response(200, SessionListSchema)
def list_():
    """The caller's sessions (all sessions for admin keys)."""
    found = [sessions.public_view(s) for s in sessions.list_sessions(get_redis(), tenant_filter())]
    return {"sessions": found, "count": len(found)}


@blp.route("/<session_id>", methods=["GET"])
@requires("read")
@blp.response(200, SessionSchema)
def show(session_id: str):
    """One session: status, proxy (redacted), trust, counters, last ping."""
    return sessions.public_view(visible_session(session_id))


@blp.route("/<session_id>/qr", methods=["GET"])
@requires("read")
@blp.response(200, QrSchema, content_type="application/json")
@blp.alt_response(200, content_type="image/png", description="with `Accept: image/png`")
@blp.alt_response(404, description="no QR is waiting to be scanned")
def qr(session_id: str):
    """The QR code waiting to be scanned, as PNG (`Accept: image/png`) or JSON."""
    session = visible_session(session_id)
    payload = get_redis().get(keys.session_qr(session_id))
    pair_code = session.get("pair_code") or None
    if not payload and not pair_code:
        raise ApiError(404, "not_found", "no QR code for this session right now")
    if payload and request.accept_mimetypes.best_match(["application/json", "image/png"]) == "image/png":
        out = io.BytesIO()
        segno.make(payload, error="l").save(out, kind="png", scale=6, border=4)
        return Response(out.getvalue(), mimetype="image/png", headers={"Cache-Control": "no-store"})
    return {"qr": payload, "pair_code": pair_code}


@blp.route("/<session_id>/events", methods=["GET"])
@requires("read")
@blp.response(200, EventsSchema)
def events(session_id: str):
    """The session's most recent worker and lifecycle events, newest first."""
    visible_session(session_id)
    items = get_redis().lrange(keys.session_events(session_id), 0, sessions.EVENTS_CAP - 1)
    return {"events": [json.loads(item) for item in items]}


@blp.route("/<session_id>/restart", methods=["POST"])
@requires("admin")
@blp.response(202, SessionSchema)
def restart(session_id: str):
    """Restart the worker (same proxy, same data); also revives a stopped, banned or logged-out session."""
    visible_session(session_id)
    session = lifecycle.restart_session(get_redis(), session_id, reason="api")
    if session is None:
        raise ApiError(404, "not_found", f"no session {session_id}")
    return sessions.public_view(session)


@blp.route("/<session_id>", methods=["DELETE"])
@requires("admin")
@blp.response(204)
def delete(session_id: str):
    """Delete the session and its worker; its proxy slot is freed, the phone keeps its sticky proxy."""
    visible_session(session_id)
    if not lifecycle.delete_session(get_redis(), session_id):
        raise ApiError(404, "not_found", f"no session {session_id}")
    return "", 204
