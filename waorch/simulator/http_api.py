"""The simulator's HTTP API (aiohttp): what tests and demos use to play the phone and the network."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from waorch.simulator.ban_model import BanThresholds
from waorch.simulator.state import PHONE, Network

log = logging.getLogger(__name__)
NETWORK = web.AppKey("network", Network)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class _HTTPJSONError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, code, message)


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except _HTTPJSONError as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("simulator API error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error")


async def _body(request: web.Request, required: bool = True) -> dict[str, Any]:
    if not request.can_read_body:
        if required:
            raise _HTTPJSONError(400, "bad_json", "a JSON object body is required")
        return {}
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _HTTPJSONError(400, "bad_json", "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise _HTTPJSONError(400, "bad_json", "body must be a JSON object")
    return data


def _phone(request: web.Request) -> str:
    phone = request.match_info["phone"]
    if not PHONE.match(phone):
        raise _HTTPJSONError(422, "invalid_phone", "phone must be E.164 digits")
    return phone


def _unknown(phone: str) -> web.Response:
    return _error(404, "unknown_account", f"no account {phone} on the simulated network")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "accounts": len(request.app[NETWORK].accounts)})


async def list_accounts(request: web.Request) -> web.Response:
    network = request.app[NETWORK]
    return web.json_response([a.view() for a in network.accounts.values()])


async def get_account(request: web.Request) -> web.Response:
    phone = _phone(request)
    account = request.app[NETWORK].accounts.get(phone)
    return web.json_response(account.view()) if account else _unknown(phone)


async def scan(request: web.Request) -> web.Response:
    phone = _phone(request)
    code = (await _body(request, required=False)).get("code")
    if not request.app[NETWORK].scan(phone, code if isinstance(code, str) else None):
        return _error(404, "no_qr_waiting", f"no session for {phone} is waiting with that QR code")
    return web.json_response({"phone": phone, "paired": True})


async def ban(request: web.Request) -> web.Response:
    phone = _phone(request)
    reason = (await _body(request, required=False)).get("reason") or "manual"
    if not request.app[NETWORK].ban(phone, str(reason)[:200]):
        return _unknown(phone)
    return web.json_response({"phone": phone, "state": "banned"})


async def disconnect(request: web.Request) -> web.Response:
    phone = _phone(request)
    closed = request.app[NETWORK].disconnect(phone)
    return _unknown(phone) if closed is None else web.json_response({"phone": phone, "closed": closed})


async def logout(request: web.Request) -> web.Response:
    phone = _phone(request)
    if not request.app[NETWORK].logout(phone):
        return _unknown(phone)
    return web.json_response({"phone": phone, "logged_out": True})


async def restrict(request: web.Request) -> web.Response:
    phone = _phone(request)
    body = await _body(request)
    seconds, reason = body.get("seconds"), body.get("reason") or "reach-out time-lock"
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 30 * 86400:
        return _error(422, "invalid_seconds", "seconds must be a number in (0, 2592000]")
    until = request.app[NETWORK].restrict(phone, float(seconds), str(reason)[:200])
    return _unknown(phone) if until is None else web.json_response({"phone": phone, "until": until})


async def list_messages(request: web.Request) -> web.Response:
    query = request.query
    return web.json_response(request.app[NETWORK].list_messages(query.get("from"), query.get("to")))


async def list_inbound(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[NETWORK].inbound_log))


async def post_inbound(request: web.Request) -> web.Response:
    body = await _body(request)
    sender, to, text, media = body.get("from"), body.get("to"), body.get("text"), body.get("media")
    if not isinstance(sender, str) or not PHONE.match(sender):
        return _error(422, "invalid_from", "from must be E.164 digits")
    if not isinstance(to, str) or not PHONE.match(to):
        return _error(422, "invalid_to", "to must be E.164 digits")
    if not isinstance(text, str) or (not text and not isinstance(media, dict)):
        return _error(422, "invalid_text", "text must be a string (non-empty unless media is given)")
    if media is not None and not isinstance(media, dict):
        return _error(422, "invalid_media", "media must be an object")
    event = request.app[NETWORK].inbound(sender, to, text, media)
    if event is None:
        return _unknown(to)
    return web.json_response({"wa_id": event["wa_id"], "at": event["at"]}, status=202)


async def get_ban_model(request: web.Request) -> web.Response:
    return web.json_response(request.app[NETWORK].config.ban_thresholds.as_dict())


async def put_ban_model(request: web.Request) -> web.Response:
    try:
        thresholds = BanThresholds.from_dict(await _body(request))
    except ValueError as exc:
        return _error(422, "invalid_ban_model", str(exc))
    request.app[NETWORK].config.ban_thresholds = thresholds
    return web.json_response(thresholds.as_dict())


def create_app(network: Network) -> web.Application:
    app = web.Application(middlewares=[_json_errors], client_max_size=1 << 20)
    app[NETWORK] = network
    app.router.add_get("/sim/health", health)
    app.router.add_get("/sim/accounts", list_accounts)
    app.router.add_get("/sim/accounts/{phone}", get_account)
    app.router.add_post("/sim/accounts/{phone}/scan", scan)
    app.router.add_post("/sim/accounts/{phone}/ban", ban)
    app.router.add_post("/sim/accounts/{phone}/disconnect", disconnect)
    app.router.add_post("/sim/accounts/{phone}/logout", logout)
    app.router.add_post("/sim/accounts/{phone}/restrict", restrict)
    app.router.add_get("/sim/messages", list_messages)
    app.router.add_get("/sim/inbound", list_inbound)
    app.router.add_post("/sim/inbound", post_inbound)
    app.router.add_get("/sim/ban-model", get_ban_model)
    app.router.add_put("/sim/ban-model", put_ban_model)
    return app
