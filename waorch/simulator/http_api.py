"""The simulator's HTTP API (aiohttp): what tests and demos use to play the phone and the network.

Chat and account-safety routes (reach-out locks, blocks, LIDs, events) are in http_chat.py.
"""

from __future__ import annotations

from aiohttp import web

from waorch.simulator import http_chat
from waorch.simulator.ban_model import BanThresholds
from waorch.simulator.http_common import (
    NETWORK,
    body,
    error,
    json_errors,
    phone_field,
    phone_param,
    seconds_field,
    unknown,
)
from waorch.simulator.media import media_problem
from waorch.simulator.state import Network


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "accounts": len(request.app[NETWORK].accounts)})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[NETWORK].stats())


async def list_accounts(request: web.Request) -> web.Response:
    network = request.app[NETWORK]
    now = network.clock()
    return web.json_response([a.view(now) for a in network.accounts.values()])


async def get_account(request: web.Request) -> web.Response:
    phone = phone_param(request)
    network = request.app[NETWORK]
    account = network.accounts.get(phone)
    return web.json_response(account.view(network.clock())) if account else unknown(phone)


async def scan(request: web.Request) -> web.Response:
    phone = phone_param(request)
    code = (await body(request, required=False)).get("code")
    if not request.app[NETWORK].scan(phone, code if isinstance(code, str) else None):
        return error(404, "no_qr_waiting", f"no session for {phone} is waiting with that QR code")
    return web.json_response({"phone": phone, "paired": True})


async def ban(request: web.Request) -> web.Response:
    phone = phone_param(request)
    data = await body(request, required=False)
    reason, code = data.get("reason") or "manual", data.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        return error(422, "invalid_code", "code must be an integer (e.g. 101) or null")
    if not request.app[NETWORK].ban(phone, str(reason)[:200], code):
        return unknown(phone)
    return web.json_response({"phone": phone, "state": "banned"})


async def disconnect(request: web.Request) -> web.Response:
    phone = phone_param(request)
    closed = request.app[NETWORK].disconnect(phone)
    return unknown(phone) if closed is None else web.json_response({"phone": phone, "closed": closed})


async def logout(request: web.Request) -> web.Response:
    phone = phone_param(request)
    if not request.app[NETWORK].logout(phone):
        return unknown(phone)
    return web.json_response({"phone": phone, "logged_out": True})


async def restrict(request: web.Request) -> web.Response:
    phone = phone_param(request)
    data = await body(request)
    seconds, reason = seconds_field(data), data.get("reason") or "reach-out time-lock"
    until = request.app[NETWORK].restrict(phone, seconds, str(reason)[:200])
    return unknown(phone) if until is None else web.json_response({"phone": phone, "until": until})


async def list_messages(request: web.Request) -> web.Response:
    query = request.query
    return web.json_response(request.app[NETWORK].list_messages(query.get("from"), query.get("to")))


async def list_inbound(request: web.Request) -> web.Response:
    return web.json_response([m.view() for m in request.app[NETWORK].inbound_log])


async def post_inbound(request: web.Request) -> web.Response:
    data = await body(request)
    sender, to = phone_field(data, "from"), phone_field(data, "to")
    text, media, reply_to = data.get("text"), data.get("media"), data.get("reply_to")
    as_lid, with_phone = data.get("as_lid", False), data.get("with_phone", True)
    if not isinstance(text, str) or (not text and not isinstance(media, dict)):
        return error(422, "invalid_text", "text must be a string (non-empty unless media is given)")
    problem = media_problem(media)
    if problem is not None:
        return error(422, "invalid_media", problem[1])
    if not isinstance(as_lid, bool) or not isinstance(with_phone, bool):
        return error(422, "invalid_flags", "as_lid and with_phone must be booleans")
    network = request.app[NETWORK]
    account = network.accounts.get(to)
    if account is None:
        return unknown(to)
    quoted = isinstance(reply_to, str) and network.in_chat(account, sender, reply_to)
    if reply_to is not None and not quoted:
        return error(422, "unknown_quoted", "reply_to is not a message between these two")
    message = network.inbound(sender, to, text, media, as_lid=as_lid, with_phone=with_phone,
                              reply_to=reply_to)
    assert message is not None
    return web.json_response({"wa_id": message.id, "at": message.at, "from": message.from_lid or sender,
                              "lid": message.from_lid}, status=202)


async def get_ban_model(request: web.Request) -> web.Response:
    return web.json_response(request.app[NETWORK].config.ban_thresholds.as_dict())


async def put_ban_model(request: web.Request) -> web.Response:
    try:
        thresholds = BanThresholds.from_dict(await body(request))
    except ValueError as exc:
        return error(422, "invalid_ban_model", str(exc))
    request.app[NETWORK].config.ban_thresholds = thresholds
    return web.json_response(thresholds.as_dict())


def create_app(network: Network) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1 << 20)
    app[NETWORK] = network
    app.router.add_get("/sim/health", health)
    app.router.add_get("/sim/stats", stats)
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
    http_chat.add_routes(app)
    return app
