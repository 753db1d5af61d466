"""API key authentication and scope checks for views."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.errors import ApiError
from waorch.core.redis_client import get_redis
from waorch.sessions import registry as sessions
from waorch.tenants import apikeys


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def current_principal() -> apikeys.Principal:
    return g.principal


def requires(scope: str):
    """View decorator: 401 without a valid key, 403 when the key lacks `scope`."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            raw = presented_key()
            if not raw:
                raise ApiError(401, "unauthorized", "missing API key (X-API-Key or Bearer)")
            principal = apikeys.lookup(get_redis(), raw)
            if principal is None:
                raise ApiError(401, "unauthorized", "invalid API key")
            if not principal.allows(scope):
                raise ApiError(403, "forbidden", f"this key lacks the '{scope}' scope")
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorate


def tenant_filter() -> str | None:
    """The tenant a listing is restricted to (None for admin keys: they see all)."""
    principal = current_principal()
    return None if principal.is_admin else principal.tenant


def acting_tenant(requested: str | None, refusal: str) -> str:
    """The tenant this request acts for: the key's own, or `requested` for admin keys (403 `refusal`
    for other keys)."""
    principal = current_principal()
    if requested and requested != principal.tenant:
        if not principal.is_admin:
            raise ApiError(403, "forbidden", refusal)
        return requested
    return principal.tenant


def visible_session(session_id: str) -> dict:
    """The session if the caller may see it; 404 otherwise (other tenants' ids are not revealed)."""
    session = sessions.get_session(get_redis(), session_id)
    tenant = tenant_filter()
    if session is None or (tenant is not None and session["tenant"] != tenant):
        raise ApiError(404, "not_found", f"no session {session_id}")
    return session
