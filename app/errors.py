"""Every error leaves the gateway as JSON {code, message, errors}; never a stack trace."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer raised from service code or views."""

    def __init__(self, status: int, code: str, message: str, errors: dict | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or {}
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, errors: dict | None = None,
                   headers: dict | None = None):
    response = jsonify({"code": code, "message": message, "errors": errors or {}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
          503: "unavailable"}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.errors, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        errors = {}
        # flask-smorest/webargs put marshmallow field errors here
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages") if isinstance(data, dict) else None
        if messages:
            # webargs nests by location ("json", "query"): flatten the single location case
            errors = next(iter(messages.values())) if len(messages) == 1 else messages
        message = exc.description if status != 422 else "the request did not validate"
        headers = dict(data.get("headers") or {}) if isinstance(data, dict) else {}
        return error_response(status, _CODES.get(status, "error"), str(message), errors, headers)

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError):
        log.warning("redis unavailable: %s", exc.__class__.__name__)
        return error_response(503, "unavailable", "state store unavailable, retry later",
                              headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
