"""GET /metrics: Prometheus text exposition of waorch's fleet-wide state (waorch.metrics.collector).

Open by default (bind the gateway or firewall the port accordingly); with WAORCH_METRICS_TOKEN set,
scrapers must send `Authorization: Bearer <token>`. Labels carry ids only, never secrets.
"""

from __future__ import annotations

import hmac
import logging

import redis
from flask import Blueprint, Response, request

from app.errors import ApiError
from waorch.core import settings
from waorch.core.redis_client import get_redis
from waorch.metrics import collector as metrics

log = logging.getLogger(__name__)
blueprint = Blueprint("metrics", __name__)


def _check_token() -> None:
    token = settings.get().metrics_token
    if not token:
        return
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "GET /metrics needs the metrics bearer token",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


@blueprint.route("/metrics", methods=["GET"])
def scrape() -> Response:
    """Everything waorch measures, read from Redis now; 503 (plain text) when Redis is down."""
    _check_token()
    try:
        body = metrics.render(get_redis())
    except (redis.RedisError, OSError) as exc:
        log.warning("metrics: redis unavailable: %s", exc.__class__.__name__)
        return Response("redis unavailable\n", status=503, mimetype="text/plain",
                        headers={"Retry-After": "5"})
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
