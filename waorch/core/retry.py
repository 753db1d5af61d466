"""Backoff between attempts, shared by every retrying delivery (client webhooks, alerts)."""

from __future__ import annotations

import random


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Pause after the `attempts`-th failure: base·2^(n−1), capped, times a jitter in [0.5, 1]."""
    delay = min(cap, base * 2 ** min(max(attempts - 1, 0), 40))
    return delay * (0.5 + (rng or random).random() / 2)
