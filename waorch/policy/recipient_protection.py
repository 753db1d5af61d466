"""Recipient protection: opt-out replies, quiet hours in the recipient's time zone, daily caps.

The decisions that must hold under concurrency (suppression, quiet hours, the per-recipient cap)
are taken in Lua at slot reservation and again at claim (lib/pacing.lua, sending/claim.lua).
This module prepares what they need: each message carries `quiet`, its recipient's quiet hours as
"start,end" in UTC seconds of the day. Recipient send logs: recipient:sends:<tenant>:<phone>.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import redis
from phonenumbers import timezone as phone_timezone

from waorch.policy import rules as policy
from waorch.policy import suppressions

log = logging.getLogger(__name__)

DAY = 86400
MAX_QUIET_HOURS = 16  # a country whose zones would stretch the night further gets its middle zone
_UNKNOWN = "Etc/Unknown"
LEADING_KEYWORDS = frozenset({"STOP", "UNSUBSCRIBE"})  # opt out even with more words after them


def recipient_zones(phone: str) -> list[str]:
    """Time zones phonenumbers gives for the number (its country's when the number is unknown)."""
    return list(_zones_of(phone))


@lru_cache(maxsize=65536)  # a person written to again costs no parse (the router's hot path)
def _zones_of(phone: str) -> tuple[str, ...]:
    try:
        number = phonenumbers.parse("+" + phone.lstrip("+"))
    except phonenumbers.NumberParseException:
        return ()
    zones = [z for z in phone_timezone.time_zones_for_number(number) if z != _UNKNOWN]
    if not zones:
        # pylint: disable-next=protected-access
        zones = [z for z in phone_timezone._country_level_time_zones_for_number(number)  # noqa: SLF001
                 if z != _UNKNOWN]
    return tuple(zones)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    """zoneinfo keeps only 8 zones strongly cached: a country with more reloaded its files per call."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _offsets(zones: list[str] | tuple[str, ...], now: float) -> list[int]:
    moment = datetime.fromtimestamp(now, ZoneInfo("UTC"))
    found = []
    for name in zones:
        zone = _zone(name)
        if zone is None:
            continue
        offset = moment.astimezone(zone).utcoffset() or timedelta(0)
        found.append(int(offset.total_seconds()))
    return sorted(found)


def quiet_window(phone: str, quiet: policy.QuietHours | None, now: float | None = None) -> str:
    """The recipient's quiet hours as "start,end" UTC seconds of the day ("" when none apply).

    A number that may be in several zones gets the union of their nights (earliest start, latest
    end), unless that night would exceed MAX_QUIET_HOURS: then the middle zone's night.
    """
    if quiet is None:
        return ""
    now = time.time() if now is None else now
    # offsets change only at a zone's clock change: the minute's value serves the whole minute
    return _window(_zones_of(phone), quiet, int(now // 60))


@lru_cache(maxsize=4096)
def _window(zones: tuple[str, ...], quiet: policy.QuietHours, minute: int) -> str:
    now = minute * 60.0
    offsets = _offsets(zones, now) or _offsets([quiet.fallback_timezone], now)
    if not offsets:
        return ""
    length = ((quiet.end - quiet.start) % (24 * 60)) * 60
    low, high = offsets[0], offsets[-1]
    if length + (high - low) > MAX_QUIET_HOURS * 3600:
        low = high = offsets[len(offsets) // 2]
    start = (quiet.start * 60 - high) % DAY
    end = (quiet.end * 60 - low) % DAY
    return f"{start},{end}"


def quiet_until(window: str, at: float) -> float | None:
    """When the quiet hours of `window` end, if `at` is inside them (mirror of lib/pacing.lua)."""
    if not window:
        return None
    start, end = (int(x) for x in window.split(","))
    day = (at // DAY) * DAY
    tod = at - day
    if start < end:
        return day + end if start <= tod < end else None
    if tod >= start:
        return day + DAY + end
    return day + end if tod < end else None


def opt_out_keyword(text: str, pol: policy.Policy | None = None) -> str | None:
    """The opt-out keyword `text` is (case and punctuation ignored); else None.

    A reply that only starts with one counts too for the unambiguous STOP and UNSUBSCRIBE
    ("stop sending me this"), not for words like CANCEL that start ordinary replies.
    """
    pol = pol or policy.get()
    words = policy.normalize_keyword(text or "")
    if not words:
        return None
    if words in pol.opt_out_keywords:
        return words
    first = words.split(" ", 1)[0]
    return first if first in LEADING_KEYWORDS else None


def handle_inbound(r: redis.Redis, session: dict, sender: str, text: str,
                   at: float | None = None) -> dict | None:
    """An inbound message to `session`: an opt-out keyword suppresses the sender for the tenant."""
    keyword = opt_out_keyword(text)
    sender = (sender or "").lstrip("+").split("@")[0]
    if keyword is None or not sender.isdigit():
        return None
    record, created = suppressions.add(
        r, session["tenant"], sender, reason=f"opt-out reply {keyword!r}",
        source=f"inbound:{session['id']}", at=at)
    if created:
        log.info("recipient opted out of tenant %s (keyword %s, session %s)", session["tenant"],
                 keyword, session["id"])
    return record
