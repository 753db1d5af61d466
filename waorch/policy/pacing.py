"""Pacing of one session from the anti-ban policy: budgets, jitter, and the Lua calls that enforce them.

Own keys: session:sendlog:<id> (ZSET "<msg>:<attempt>" -> claim time; the truth for the minute
and day budgets), session:sent:<id> (ZSET msg -> sent_at reported by the worker; burst detection),
and in session:pacing:<id> the fields next_slot, next_claim, last_claim, cooldown_until,
cooldown_reason, demand_burst.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import redis

from waorch.core import keys, lua, settings
from waorch.policy import rules as policy

MAX_EXAMINED = 100  # due messages one claim call may hold or fail before it answers
# The OS's randomness: forked Celery processes never share a jitter sequence, and nobody
# seeding the global `random` module can make the pace predictable.
_RANDOM = random.SystemRandom()
_LEVEL_RETRIES = 3  # a trust level changing under a claim is re-read this often


@dataclass(frozen=True)
class Pace:
    per_minute: float
    jitter: float
    per_day: int | None = None
    level: str | None = None  # the session's trust_level these numbers were chosen for
    distribution: str = "uniform"
    recipient_daily_cap: int | None = None

    @property
    def interval(self) -> float:
        """Mean seconds between two sends."""
        return 60.0 / self.per_minute

    @property
    def min_gap(self) -> float:
        """The closest two sends of one session may ever be: 60 / per_minute × (1 − jitter)."""
        return self.interval * (1 - self.jitter)

    def draw(self, rng: random.Random | None = None) -> float:
        """A random in [0, 1) shaped by the jitter distribution (0.5 is the mean interval)."""
        rng = rng or _RANDOM
        if self.distribution == "triangular":
            return (rng.random() + rng.random()) / 2
        return rng.random()


def pace_for(session: dict | None = None, pol: policy.Policy | None = None) -> Pace:
    """Pacing of `session` under the policy: its trust level's budgets (lowest rung if unknown)."""
    pol = pol or policy.get()
    raw_level = (session or {}).get("trust_level") if session else None
    level = pol.level(raw_level or pol.default_trust_level)
    return Pace(per_minute=level.per_minute, jitter=pol.jitter, per_day=level.per_day,
                level=(raw_level or "") if session else None,
                distribution=pol.jitter_distribution,
                recipient_daily_cap=pol.recipient_daily_cap)


def _stamp(now: float) -> str:
    return f"{now:.6f}"


def reserve(r: redis.Redis, session_id: str, phone: str, pace: Pace, now: float | None = None,
            rng: random.Random | None = None, batch: int = 50) -> tuple[int, list[str]]:
    """Plan send slots for the session's routed messages; (scheduled, ids failed as suppressed)."""
    now = time.time() if now is None else now
    randoms = [f"{pace.draw(rng):.6f}" for _ in range(batch)]
    out = lua.script(r, "reserve_send_slot")(
        keys=[keys.session_queue(phone), keys.session_outbox(session_id),
              keys.session_pacing(session_id), keys.session_sendlog(session_id),
              keys.session(session_id)],
        args=[_stamp(now), pace.interval, pace.jitter, settings.get().schedule_horizon,
              pace.per_day or 0, *randoms],
    )
    return int(out[0]), list(out[1:])


def claim(r: redis.Redis, session_id: str, pace: Pace, now: float, lease: int,
          token: str) -> list:
    """Run claim_message.lua; re-reads the session's pacing when its trust level changed meanwhile."""
    for _ in range(_LEVEL_RETRIES):
        result = lua.script(r, "claim_message")(
            keys=[keys.session_outbox(session_id), keys.session_leases(session_id),
                  keys.session_pacing(session_id), keys.session_sendlog(session_id),
                  keys.session(session_id)],
            args=[_stamp(now), lease, token, pace.interval, pace.jitter, f"{pace.draw():.6f}",
                  pace.per_minute, pace.per_day or 0, "" if pace.level is None else pace.level,
                  pace.recipient_daily_cap or 0, MAX_EXAMINED, f"{pace.draw():.6f}",
                  "0" if settings.get().recipient_order == "off" else "1"],
        )
        if result[0] != "level":
            return result
        pace = pace_for({"trust_level": result[1]})
    return ["wait", _stamp(now + 0.1)]


def usage(r: redis.Redis, session_id: str, now: float | None = None) -> dict[str, float | int | None]:
    """What the session used of its budgets and when its cooldown ends (for sender choice, API)."""
    now = time.time() if now is None else now
    log = keys.session_sendlog(session_id)
    pipe = r.pipeline(transaction=False)
    pipe.zcount(log, f"({now - 60:.6f}", "+inf")
    pipe.zcount(log, f"({now - 86400:.6f}", "+inf")
    pipe.hmget(keys.session_pacing(session_id), "cooldown_until", "cooldown_reason", "next_claim")
    last_minute, last_day, (cooldown, reason, next_claim) = pipe.execute()
    cooldown_until = float(cooldown) if cooldown and float(cooldown) > now else None
    return {"last_minute": last_minute, "last_day": last_day, "cooldown_until": cooldown_until,
            "cooldown_reason": reason if cooldown_until else None,
            "next_claim": float(next_claim) if next_claim else None}
