"""Pacing of one session from the anti-ban policy: budgets and jitter (enforced by sending/claim.lua).

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

from waorch.core import keys
from waorch.policy import rules as policy

# The OS's randomness: forked Celery processes never share a jitter sequence, and nobody
# seeding the global `random` module can make the pace predictable.
_RANDOM = random.SystemRandom()


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
