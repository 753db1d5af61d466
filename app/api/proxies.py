"""Proxy inventory API (admin): add, list, show, delete, check. Credentials never leave redacted."""

from __future__ import annotations

from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields

from app.auth import requires
from app.errors import ApiError
from waorch.core.redis_client import get_redis
from waorch.fleet import lifecycle, proxy_failover
from waorch.proxies.pool import InvalidProxyUrl, ProxyNotFound, ProxyPool, normalize_url

blp = Blueprint("proxies", __name__, url_prefix="/api/proxies",
                description="Proxy inventory: sticky per phone, at most WAORCH_PROXY_CEILING sessions each")


class ProxyUrlField(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_url(text)
        except InvalidProxyUrl as exc:
            raise ValidationError(str(exc)) from None


class ProxyCreateSchema(Schema):
    url = ProxyUrlField(required=True, metadata={
        "description": "socks5h://user:pass@host:port, socks5://... or http://..."})


class ProxySchema(Schema):
    id = fields.String()
    url = fields.String(metadata={"description": "credentials redacted as ***"})
    scheme = fields.String()
    status = fields.String(metadata={"description": "OK | BAD"})
    sessions = fields.Integer()
    ceiling = fields.Integer()
    available = fields.Boolean()
    consecutive_failures = fields.Integer()
    added_at = fields.Float(allow_none=True)
    last_check = fields.Float(allow_none=True)
    last_ok = fields.Float(allow_none=True)
    last_error = fields.String(allow_none=True)
    change = fields.String(allow_none=True, metadata={"description": "after a check: burned | recovered"})


class ProxyListSchema(Schema):
    proxies = fields.List(fields.Nested(ProxySchema))
    count = fields.Integer()


def _url(proxy_id: str) -> str:
    try:
        return ProxyPool(get_redis()).resolve(proxy_id)
    except ProxyNotFound:
        raise ApiError(404, "not_found", f"no proxy {proxy_id}") from None


@blp.route("", methods=["POST"])
@requires("admin")
@blp.arguments(ProxyCreateSchema)
@blp.response(201, ProxySchema)
def add(body: dict):
    """Add a proxy (validated); adding one that exists answers 200 with it."""
    view, added = ProxyPool(get_redis()).add(body["url"])
    lifecycle.check_inventory(get_redis())
    return view, 201 if added else 200


@blp.route("", methods=["GET"])
@requires("admin")
@blp.response(200, ProxyListSchema)
def list_():
    """Every proxy with its status and load."""
    found = ProxyPool(get_redis()).list()
    return {"proxies": found, "count": len(found)}


@blp.route("/<proxy_id>", methods=["GET"])
@requires("admin")
@blp.response(200, ProxySchema)
def show(proxy_id: str):
    return ProxyPool(get_redis()).view(_url(proxy_id))


@blp.route("/<proxy_id>", methods=["DELETE"])
@requires("admin")
@blp.response(204)
def remove(proxy_id: str):
    """Remove a proxy; its sessions move to other proxies and restart."""
    r = get_redis()
    url = _url(proxy_id)
    try:
        ProxyPool(r).remove(url)
    except ProxyNotFound:
        raise ApiError(404, "not_found", f"no proxy {proxy_id}") from None
    proxy_failover.relocate_sessions(r, url, "proxy removed")
    return "", 204


@blp.route("/<proxy_id>/check", methods=["POST"])
@requires("admin")
@blp.response(200, ProxySchema)
def check(proxy_id: str):
    """Check the proxy now (a real connection through it) and act on the result."""
    return proxy_failover.check_proxy(get_redis(), _url(proxy_id))
