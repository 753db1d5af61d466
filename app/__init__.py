"""The gateway: Flask app factory with the flask-smorest API, worker endpoints and dashboard."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from flask_smorest import Api

from app import metrics as metrics_view
from app.api import load_blueprints
from app.dashboard import blueprint as dashboard_page
from app.errors import ApiError, register_error_handlers
from waorch.core import settings
from waorch.metrics import http as http_metrics


def create_app(overrides: dict | None = None) -> Flask:
    """Build the gateway app; settings come from the environment."""
    conf = settings.get()
    app = Flask(__name__)
    app.config.update(
        API_TITLE="waorch",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/api/docs-assets/",
        MAX_CONTENT_LENGTH=conf.max_body,
        JSON_SORT_KEYS=False,
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }},
            "security": [{"ApiKey": []}, {"Bearer": []}],
        },
    )
    if overrides:
        app.config.update(overrides)
    logging.basicConfig(level=conf.log_level)

    @app.before_request
    def _start_clock():
        g.request_started = time.perf_counter()

    @app.after_request
    def _count(response):
        # labelled by the route template (never the path itself: ids would explode the series)
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        http_metrics.TALLY.observe(endpoint, request.method, response.status_code,
                                   time.perf_counter() - g.get("request_started", time.perf_counter()))
        return response

    @app.before_request
    def _json_only():
        # 415 for bodies that are not JSON, on every endpoint that takes one
        if request.method in ("POST", "PUT", "PATCH") and request.content_length \
                and not request.is_json:
            raise ApiError(415, "unsupported_media_type", "send application/json")

    api = Api(app)
    for blueprint in load_blueprints():
        api.register_blueprint(blueprint)
    app.register_blueprint(metrics_view.blueprint)  # plain Flask: Prometheus text, not in OpenAPI
    app.register_blueprint(dashboard_page)  # plain static pages, not part of the OpenAPI spec
    # after Api(app): flask-smorest registers its own HTTPException handler, ours must win
    register_error_handlers(app)
    return app
