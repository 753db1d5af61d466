"""GET /api/health (readiness incl. Redis), /api/health/live, and the Swagger UI assets served offline."""

from __future__ import annotations

import time

import redis
import swagger_ui_bundle
from flask import Blueprint as FlaskBlueprint
from flask import abort, send_from_directory
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from waorch.core.redis_client import get_redis

blp = Blueprint("health", __name__, url_prefix="/api", description="Liveness and readiness")

# flask-smorest points Swagger UI at a CDN by default; the gateway must work without internet.
SWAGGER_ASSETS = swagger_ui_bundle.swagger_ui_path
_SWAGGER_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                            "favicon-16x16.png", "favicon-32x32.png", "oauth2-redirect.html"})
_STARTED = time.time()


class HealthSchema(Schema):
    status = fields.String(metadata={"description": "ok | unavailable"})
    redis = fields.String(metadata={"description": "ok | down"})
    redis_latency_ms = fields.Float(allow_none=True)
    uptime = fields.Float(metadata={"description": "seconds since this gateway process started"})


class LivenessSchema(Schema):
    status = fields.String()
    uptime = fields.Float()


def redis_check() -> tuple[bool, float | None]:
    """Ping Redis once: (ok, latency in ms)."""
    started = time.perf_counter()
    try:
        get_redis().ping()
    except (redis.RedisError, OSError):
        return False, None
    return True, round((time.perf_counter() - started) * 1000, 3)


@blp.route("/health")
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="Redis is unreachable")
def health():
    """Readiness: 200 when the gateway can reach Redis, else 503."""
    ok, latency = redis_check()
    body = {"status": "ok" if ok else "unavailable", "redis": "ok" if ok else "down",
            "redis_latency_ms": latency, "uptime": round(time.time() - _STARTED, 3)}
    return body, 200 if ok else 503


@blp.route("/health/live")
@blp.response(200, LivenessSchema)
def live():
    """Liveness: 200 whenever the process serves requests (Redis not consulted)."""
    return {"status": "ok", "uptime": round(time.time() - _STARTED, 3)}


def docs_asset(filename: str):
    if filename not in _SWAGGER_FILES:
        abort(404)
    return send_from_directory(SWAGGER_ASSETS, filename, max_age=86400)


# Plain Flask registration keeps the asset route out of the OpenAPI document.
FlaskBlueprint.add_url_rule(blp, "/docs-assets/<path:filename>", "docs_asset", docs_asset)
