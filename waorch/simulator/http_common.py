"""What the simulator's HTTP API modules share: the app key, JSON bodies, validation and errors."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from waorch.simulator.state import PHONE, Network

log = logging.getLogger(__name__)
NETWORK = web.AppKey("network", Network)
MAX_SECONDS = 30 * 86400


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class HTTPJSONError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = error(status, code, message)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except HTTPJSONError as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("simulator API error on %s %s", request.method, request.path)
        return error(500, "internal", "internal error")


async def body(request: web.Request, required: bool = True) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise HTTPJSONError(400, "bad_json", "a JSON object body is required")
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPJSONError(400, "bad_json", "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise HTTPJSONError(400, "bad_json", "body must be a JSON object")
    return data


def phone_param(request: web.Request) -> str:
    phone = request.match_info["phone"]
    if not PHONE.match(phone):
        raise HTTPJSONError(422, "invalid_phone", "phone must be E.164 digits")
    return phone


def phone_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not PHONE.match(value):
        raise HTTPJSONError(422, f"invalid_{name}", f"{name} must be E.164 digits")
    return value


def seconds_field(data: dict[str, Any]) -> float:
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_SECONDS:
        raise HTTPJSONError(422, "invalid_seconds", f"seconds must be a number in (0, {MAX_SECONDS}]")
    return float(seconds)


def unknown(phone: str) -> web.Response:
    return error(404, "unknown_account", f"no account {phone} on the simulated network")
