"""Pacing parameters of a session: base interval and jitter (the full policy refines these)."""

from __future__ import annotations

from dataclasses import dataclass

from waorch import settings


@dataclass(frozen=True)
class Pace:
    per_minute: float
    jitter: float

    @property
    def interval(self) -> float:
        """Mean seconds between two sends."""
        return 60.0 / self.per_minute

    @property
    def min_gap(self) -> float:
        """The closest two sends of one session may ever be."""
        return self.interval * (1 - self.jitter)


def pace_for(session: dict | None = None) -> Pace:
    """Pacing for `session`: its per-minute override, else the configured default."""
    conf = settings.get()
    per_minute = conf.per_minute
    if session and session.get("per_minute"):
        per_minute = float(session["per_minute"])
    if per_minute <= 0:
        raise ValueError("per_minute must be positive")
    if not 0 <= conf.jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    return Pace(per_minute=per_minute, jitter=conf.jitter)
