"""HTTP routes for chats and account safety: reach-out locks, blocks, conversations, LIDs, events."""

from __future__ import annotations

from aiohttp import web

from waorch.simulator.http_common import (
    NETWORK,
    body,
    error,
    phone_field,
    phone_param,
    seconds_field,
    unknown,
)
from waorch.simulator.lids import lid_of, phone_of


async def reachout_lock(request: web.Request) -> web.Response:
    phone = phone_param(request)
    data = await body(request)
    seconds, reason = seconds_field(data), data.get("reason") or "reach-out time-lock"
    until = request.app[NETWORK].reachout_lock(phone, seconds, str(reason)[:200])
    return unknown(phone) if until is False else web.json_response({"phone": phone, "until": until})


async def lift_reachout_lock(request: web.Request) -> web.Response:
    phone = phone_param(request)
    if request.app[NETWORK].reachout_lock(phone, None) is False:
        return unknown(phone)
    return web.json_response({"phone": phone, "until": None})


async def block(request: web.Request) -> web.Response:
    phone = phone_param(request)
    by = phone_field(await body(request), "by")
    answer = request.app[NETWORK].block(phone, by, blocked=request.path.endswith("/block"))
    return unknown(phone) if answer is None else web.json_response(answer)


async def conversations(request: web.Request) -> web.Response:
    phone = phone_param(request)
    found = request.app[NETWORK].conversations(phone)
    return unknown(phone) if found is None else web.json_response(found)


async def resolve_lid(request: web.Request) -> web.Response:
    """What account `?account=` can resolve: 200 with the phone, or 404 `unresolvable`."""
    lid = request.match_info["lid"]
    account = request.query.get("account", "")
    if phone_of(lid) is None:
        return error(422, "invalid_lid", "not a LID of this network (<digits>@lid)")
    network = request.app[NETWORK]
    if account not in network.accounts:
        return unknown(account)
    answer = network.resolve_lid(account, lid=lid)
    if answer["phone"] is None:
        return error(404, "unresolvable", f"account {account} cannot map {lid} to a phone")
    return web.json_response({"account": account, **answer})


async def person(request: web.Request) -> web.Response:
    """The network's own view of a number (for tests): its LID, and whether it is an account."""
    phone = phone_param(request)
    return web.json_response({"phone": phone, "lid": lid_of(phone),
                              "account": phone in request.app[NETWORK].accounts})


async def chat_events(request: web.Request) -> web.Response:
    query = request.query
    return web.json_response(request.app[NETWORK].chat_events(query.get("account"), query.get("person")))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/sim/accounts/{phone}/reachout-lock", reachout_lock)
    app.router.add_delete("/sim/accounts/{phone}/reachout-lock", lift_reachout_lock)
    app.router.add_post("/sim/accounts/{phone}/block", block)
    app.router.add_post("/sim/accounts/{phone}/unblock", block)
    app.router.add_get("/sim/accounts/{phone}/conversations", conversations)
    app.router.add_get("/sim/lid/{lid}", resolve_lid)
    app.router.add_get("/sim/people/{phone}", person)
    app.router.add_get("/sim/events", chat_events)
