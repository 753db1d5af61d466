"""Changes made by the Lua scripts alone, as waorch's wrappers run them but without the Python
hook after them: what a process that died in between leaves behind."""

from __future__ import annotations

import time

import redis

from waorch.core import keys, lua
from waorch.policy.pacing import Pace
from waorch.proxies import pool
from waorch.sending import outbox
from waorch.sessions import registry
from waorch.webhooks import delivery

SESSION, PHONE = "s1", "14155550100"
PACE = Pace(per_minute=60, jitter=0.3)


def lua_ack(r: redis.Redis, msg_id: str, token: str, wa_id: str, now: float) -> None:
    assert outbox.ACK(r, leases=keys.session_leases(SESSION), outbox=keys.session_outbox(SESSION),
                      pacing=keys.session_pacing(SESSION), msg_id=msg_id, lease_token=token, wa_id=wa_id,
                      sent_at=f"{now:.6f}", now=f"{now:.6f}", session_id=SESSION, day="20240101") == "ok"


def lua_receipt(r: redis.Redis, msg_id: str, status: str, at: float) -> None:
    assert outbox.RECORD_RECEIPT(r, msg_id=msg_id, status=status, at=f"{at:.6f}") == 1


def lua_fail(r: redis.Redis, msg_id: str, reason: str, detail: str, now: float) -> None:
    assert outbox.FAIL(r, unrouted=keys.MESSAGES_UNROUTED, outbox="", leases="", msg_id=msg_id,
                       reason=reason, detail=detail, now=f"{now:.6f}") == 1


def lua_transition(r: redis.Redis, session_id: str, status: str, *, force: bool = False, desired: str = "",
                   qr_mode: str = "", fields: dict | None = None) -> list:
    """sessions/transition.lua as registry.transition runs it; [outcome, old, new]."""
    return registry.TRANSITION(r, session_id=session_id, status=status, now=f"{time.time():.3f}",
                               force="1" if force else "0", desired=desired, event="", events_cap=200,
                               qr_mode=qr_mode, qr="", qr_ttl=180, count_restart="0",
                               fields=lua.pairs(fields or {}))


def lua_ping(r: redis.Redis, session_id: str, connected: bool, counters: dict | None = None,
             now: float | None = None, event: str = "") -> list:
    """sessions/record_ping.lua; [outcome, old, new]."""
    return registry.RECORD_PING(r, session_id=session_id, now=f"{time.time() if now is None else now:.3f}",
                                connected="1" if connected else "0", event=event, events_cap=200,
                                counters=lua.pairs(counters or {}))


def lua_delete_session(r: redis.Redis, session_id: str) -> list:
    """sessions/delete.lua (registry forgets it, nothing reroutes or stops its worker)."""
    return registry.DELETE(r, session_id=session_id, proxy_ceiling=4)


def lua_remove_proxy(r: redis.Redis, url: str) -> list | None:
    """proxies/remove.lua: a proxy removed behind the orchestrator's back."""
    return pool.REMOVE(r, url=url)


def lua_dead_letter_lane(r: redis.Redis, sub_id: str, lane: int, now: float, *, window: float, attempts: int,
                         error: str, id_prefix: str, most: int = 10, keep: int = 3600) -> int:
    """webhooks/dead_letter.lua without an order key: the lane's leading events past `window`."""
    return delivery.DEAD_LETTER(r, sub_id=sub_id, lane=lane, now=f"{now}", window=window, keep=keep,
                                attempts=attempts, error=error, id_prefix=id_prefix, most=most, order_key="",
                                scan=0)
