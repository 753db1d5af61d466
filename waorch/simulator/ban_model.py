"""When the simulated network bans an account: send rate, bursts, source-address changes, messages to
people without a conversation (101), blocks (102) and the same text to many people (104).

Pure logic: the caller passes the time; nothing here does I/O besides reading a config file.
"""

from __future__ import annotations

import json
import os
import unicodedata
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from hashlib import blake2b
from typing import Any

MINUTE = 60.0
BURST_WINDOW = 10.0
DAY = 86400.0  # "per day" is a rolling 24 h so that midnight is not a loophole
SOURCE_WINDOW = DAY
MAX_TEXTS = 5_000  # distinct texts remembered per account for the same-text rule

# Ban reason codes as whatsmeow reports them (events.TemporaryBan); the older rules have none.
CODE_NON_CONTACTS = 101  # too many messages to people who have no conversation with the account
CODE_BLOCKED = 102  # blocked by too many people
CODE_SAME_TEXT = 104  # the same message to too many people

KEYS = ("per_minute", "burst_10s", "max_sources", "non_contacts_per_day", "blocks_per_day",
        "same_text_per_day")


@dataclass(frozen=True)
class BanThresholds:
    """None disables a rule; all None (the default) means nobody is ever banned automatically."""

    per_minute: int | None = None  # most sends in any 60 s window
    burst_10s: int | None = None  # most sends in any 10 s window
    max_sources: int | None = None  # most distinct source addresses in any 24 h
    non_contacts_per_day: int | None = None  # most sends to people without a conversation, 24 h
    blocks_per_day: int | None = None  # most people blocking the account in 24 h
    same_text_per_day: int | None = None  # most different people getting one normalised text, 24 h

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
        unknown = set(data) - set(KEYS)
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


@dataclass(frozen=True)
class Ban:
    """Why an account is banned: a text for people and, for WhatsApp's own reasons, its code."""

    reason: str
    code: int | None = None


def text_key(text: str) -> str | None:
    """The same-text rule's key: case, width, accents' encoding and spacing do not make texts differ."""
    normalised = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    if not normalised:
        return None
    return blake2b(normalised.encode(), digest_size=8).hexdigest()


def _prune(times: list[float], horizon: float) -> None:
    del times[:bisect_right(times, horizon)]


@dataclass(slots=True)
class AccountActivity:
    """What one account did recently, enough to judge it against any thresholds.

    Lists of times (ascending), pruned on use: an idle account costs a few empty lists. The 24 h
    rules only record while they are on, so they cost nothing by default.
    """

    sends: list[float] = field(default_factory=list)  # times within the last minute
    sources: dict[str, float] = field(default_factory=dict)  # address -> last seen
    non_contact_sends: list[float] = field(default_factory=list)  # within 24 h
    blocks: dict[str, float] = field(default_factory=dict)  # person -> when they blocked
    texts: dict[str, dict[str, float]] = field(default_factory=dict)  # text key -> person -> last

    def on_send(self, now: float, thresholds: BanThresholds, *, first_contact: bool = False,
                person: str | None = None, text: str | None = None) -> Ban | None:
        """Record a send; returns the ban it earns, or None."""
        _prune(self.sends, now - MINUTE)
        self.sends.append(now)
        if thresholds.per_minute is not None and len(self.sends) > thresholds.per_minute:
            return Ban(f"rate: {len(self.sends)} sends in 60 s (limit {thresholds.per_minute})")
        if thresholds.burst_10s is not None:
            burst = len(self.sends) - bisect_right(self.sends, now - BURST_WINDOW)
            if burst > thresholds.burst_10s:
                return Ban(f"burst: {burst} sends in 10 s (limit {thresholds.burst_10s})")
        limit = thresholds.non_contacts_per_day
        if limit is not None and first_contact:
            _prune(self.non_contact_sends, now - DAY)
            self.non_contact_sends.append(now)
            if len(self.non_contact_sends) > limit:
                return Ban(f"non-contacts: {len(self.non_contact_sends)} messages to people without a "
                           f"conversation in 24 h (limit {limit})", CODE_NON_CONTACTS)
        limit = thresholds.same_text_per_day
        key = text_key(text) if limit is not None and text and person else None
        if key is not None:
            people = self._people_sent(key, now)
            people[person] = now
            if len(people) > limit:
                return Ban(f"same text: one message to {len(people)} people in 24 h (limit {limit})",
                           CODE_SAME_TEXT)
        return None

    def on_source(self, address: str, now: float, thresholds: BanThresholds) -> Ban | None:
        """Record a connection from `address`; returns the ban it earns, or None."""
        self.sources = {a: t for a, t in self.sources.items() if t > now - SOURCE_WINDOW}
        self.sources[address] = now
        if thresholds.max_sources is not None and len(self.sources) > thresholds.max_sources:
            return Ban(f"sources: {len(self.sources)} distinct addresses in 24 h "
                       f"(limit {thresholds.max_sources})")
        return None

    def on_block(self, person: str, now: float, thresholds: BanThresholds) -> Ban | None:
        """`person` blocked the account; returns the ban it earns, or None. Always recorded (a
        block is rare, and the account view shows the count)."""
        self.blocks = {p: t for p, t in self.blocks.items() if t > now - DAY}
        self.blocks[person] = now
        limit = thresholds.blocks_per_day
        if limit is not None and len(self.blocks) > limit:
            return Ban(f"blocked: {len(self.blocks)} people blocked the account in 24 h (limit {limit})",
                       CODE_BLOCKED)
        return None

    def blocks_today(self, now: float) -> int:
        return sum(1 for t in self.blocks.values() if t > now - DAY)

    def _people_sent(self, key: str, now: float) -> dict[str, float]:
        people = self.texts.get(key)
        if people is None:
            if len(self.texts) >= MAX_TEXTS:
                self._forget_old_texts(now)
            people = self.texts[key] = {}
        elif any(t <= now - DAY for t in people.values()):
            people = self.texts[key] = {p: t for p, t in people.items() if t > now - DAY}
        return people

    def _forget_old_texts(self, now: float) -> None:
        self.texts = {k: p for k, p in self.texts.items() if max(p.values(), default=0) > now - DAY}
        while len(self.texts) >= MAX_TEXTS:  # still full of live texts: the oldest entry goes
            del self.texts[next(iter(self.texts))]

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"sends": self.sends, "sources": self.sources, "non_contact_sends": self.non_contact_sends,
                "blocks": self.blocks, "texts": self.texts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountActivity:
        return cls(sends=[float(t) for t in data.get("sends", [])],
                   sources={str(a): float(t) for a, t in data.get("sources", {}).items()},
                   non_contact_sends=[float(t) for t in data.get("non_contact_sends", [])],
                   blocks={str(p): float(t) for p, t in data.get("blocks", {}).items()},
                   texts={str(k): {str(p): float(t) for p, t in v.items()}
                          for k, v in data.get("texts", {}).items()})
