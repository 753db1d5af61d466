"""Global (per tenant) rate limit of accepted messages: a token bucket in Redis."""

from __future__ import annotations

import math
import time

import redis

from waorch.core import keys, lua, settings

TAKE_TOKEN = lua.Script("tenants/take_token", keys=("bucket",), args=("rate", "burst", "now", "cost"))

def take(r: redis.Redis, tenant: str, cost: int = 1, now: float | None = None) -> float:
    """0 when `cost` tokens were taken, else the seconds to wait before retrying."""
    conf = settings.get()
    now = time.time() if now is None else now
    allowed, retry = TAKE_TOKEN(r, bucket=keys.rate_bucket(tenant), rate=conf.rate_limit,
                                burst=max(conf.rate_burst, cost), now=f"{now:.6f}", cost=cost)
    return 0.0 if int(allowed) else max(0.001, float(retry))


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
