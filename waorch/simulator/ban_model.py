"""When the simulated network bans an account: send rate, bursts and source-address changes.

Pure logic: the caller passes the time; nothing here does I/O besides reading a config file.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, dataclass, field

MINUTE = 60.0
BURST_WINDOW = 10.0
SOURCE_WINDOW = 86400.0  # "per day" is a rolling 24 h so that midnight is not a loophole


@dataclass(frozen=True)
class BanThresholds:
    """None disables a rule; all None (the default) means nobody is ever banned automatically."""

    per_minute: int | None = None  # most sends in any 60 s window
    burst_10s: int | None = None  # most sends in any 10 s window
    max_sources: int | None = None  # most distinct source addresses in any 24 h

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> BanThresholds:
        """Validate a JSON object; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("ban model must be a JSON object")
        unknown = set(data) - {"per_minute", "burst_10s", "max_sources"}
        if unknown:
            raise ValueError(f"unknown ban model keys: {', '.join(sorted(unknown))}")
        for key, value in data.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer or null")
        return cls(**data)

    @classmethod
    def parse(cls, text: str | None) -> BanThresholds:
        """From a JSON object, or the path of a file holding one; empty → everything off."""
        if not text or not text.strip():
            return cls()
        if not text.lstrip().startswith("{") and os.path.isfile(text):
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ban model is neither JSON nor a readable file: {exc.msg}") from exc
        return cls.from_dict(data)


@dataclass
class AccountActivity:
    """What one account did recently, enough to judge it against any thresholds."""

    sends: deque[float] = field(default_factory=deque)  # times within the last minute
    sources: dict[str, float] = field(default_factory=dict)  # address -> last seen

    def on_send(self, now: float, thresholds: BanThresholds) -> str | None:
        """Record a send; returns why the account is banned by it, or None."""
        while self.sends and self.sends[0] <= now - MINUTE:
            self.sends.popleft()
        self.sends.append(now)
        if thresholds.per_minute is not None and len(self.sends) > thresholds.per_minute:
            return f"rate: {len(self.sends)} sends in 60 s (limit {thresholds.per_minute})"
        if thresholds.burst_10s is not None:
            burst = sum(1 for t in self.sends if t > now - BURST_WINDOW)
            if burst > thresholds.burst_10s:
                return f"burst: {burst} sends in 10 s (limit {thresholds.burst_10s})"
        return None

    def on_source(self, address: str, now: float, thresholds: BanThresholds) -> str | None:
        """Record a connection from `address`; returns why the account is banned by it, or None."""
        self.sources = {a: t for a, t in self.sources.items() if t > now - SOURCE_WINDOW}
        self.sources[address] = now
        if thresholds.max_sources is not None and len(self.sources) > thresholds.max_sources:
            return (f"sources: {len(self.sources)} distinct addresses in 24 h "
                    f"(limit {thresholds.max_sources})")
        return None
