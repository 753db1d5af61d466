"""Message changes made by the Lua scripts alone, as the wrappers in waorch.sending.outbox run them but
without the Python hook after them: what a process that died in between leaves behind."""

from __future__ import annotations

import redis

from waorch.core import keys, lua
from waorch.policy.pacing import Pace

SESSION, PHONE = "s1", "14155550100"
PACE = Pace(per_minute=60, jitter=0.3)


def lua_ack(r: redis.Redis, msg_id: str, token: str, wa_id: str, now: float) -> None:
    assert lua.script(r, "ack_message")(
        keys=[keys.session_leases(SESSION), keys.session_outbox(SESSION), keys.session_pacing(SESSION)],
        args=[msg_id, token, wa_id, f"{now:.6f}", f"{now:.6f}", SESSION, "20240101"]) == "ok"


def lua_receipt(r: redis.Redis, msg_id: str, status: str, at: float) -> None:
    assert lua.script(r, "record_receipt")(keys=[], args=[msg_id, status, f"{at:.6f}"]) == 1


def lua_fail(r: redis.Redis, msg_id: str, reason: str, detail: str, now: float) -> None:
    assert lua.script(r, "fail_message")(keys=[keys.MESSAGES_UNROUTED, "", ""],
                                         args=[msg_id, reason, detail, f"{now:.6f}"]) == 1
