"""Global (per tenant) rate limit of accepted messages: a token bucket in Redis."""

from __future__ import annotations

import math
import time

import redis

from waorch.core import keys, lua, settings


def take(r: redis.Redis, tenant: str, cost: int = 1, now: float | None = None) -> float:
    """0 when `cost` tokens were taken, else the seconds to wait before retrying."""
    conf = settings.get()
    now = time.time() if now is None else now
    allowed, retry = lua.script(r, "rate_limit")(
        keys=[keys.rate_bucket(tenant)],
        args=[conf.rate_limit, max(conf.rate_burst, cost), f"{now:.6f}", cost],
    )
    return 0.0 if int(allowed) else max(0.001, float(retry))


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
