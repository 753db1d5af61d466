"""The anti-ban policy (SPEC section 10): loaded from one JSON or YAML file, validated, with defaults.

The built-in defaults are waorch/policy_default.yaml. A file named by WAORCH_POLICY_FILE (`waorch
run --policy`) is laid over them. Every process reads the same file, so every Lua decision gets the
same numbers; `get()` notices when the file changes and keeps the last good policy on a bad edit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from waorch.core import settings
from waorch.policy.document import (
    DEFAULT_FILE,
    PolicyError,
    clock,
    default_document,
    flag,
    hhmm,
    mapping,
    merge,
    number,
    parse_text,
)

log = logging.getLogger(__name__)

RELOAD_CHECK = 5.0  # seconds between checks of the policy file's modification time
_TOP_KEYS = ("default_trust_level", "trust_levels", "jitter", "quiet_hours", "opt_out_keywords",
             "recipient_daily_cap", "bursts", "trust_review")
_DISTRIBUTIONS = ("uniform", "triangular")


class UnknownTrustLevel(ValueError):
    """A trust level name the policy in force does not define (API, CLI and trust changes alike)."""

@dataclass(frozen=True)
class TrustLevel:
    name: str
    per_minute: float  # most sends in any 60 s window, and the mean pace
    per_day: int  # most sends in any rolling 24 h

    @property
    def interval(self) -> float:
        return 60.0 / self.per_minute


@dataclass(frozen=True)
class QuietHours:
    start: int  # minutes after local midnight
    end: int
    fallback_timezone: str


@dataclass(frozen=True)
class Bursts:
    demand_factor: float
    send_window: float
    send_factor: float
    cooldown_send: float
    cooldown_demand: float


@dataclass(frozen=True)
class Promotion:
    min_age_days: float
    min_sent: int
    max_failure_rate: float
    clean_days: float


@dataclass(frozen=True)
class TrustReview:
    ladder: tuple[str, ...]  # lowest first
    promote: dict[str, Promotion]
    demote_failure_rate: float
    demote_min_attempts: int
    demote_window_hours: float
    demote_on_neighbour_ban: bool
    demote_on_burst: bool


@dataclass(frozen=True)
class Policy:
    default_trust_level: str
    trust_levels: dict[str, TrustLevel]
    jitter: float
    jitter_distribution: str
    quiet_hours: QuietHours | None
    opt_out_keywords: tuple[str, ...]
    recipient_daily_cap: int | None
    bursts: Bursts
    trust_review: TrustReview
    source: str = field(default="built-in", compare=False)

    def level(self, name: str | None) -> TrustLevel:
        """The named level; an unknown or missing name gets the lowest rung (the safe choice)."""
        if name and name in self.trust_levels:
            return self.trust_levels[name]
        return self.trust_levels[self.trust_review.ladder[0]]

    def check_level(self, name: str) -> str:
        """`name` if this policy has that trust level; UnknownTrustLevel otherwise."""
        if name not in self.trust_levels:
            raise UnknownTrustLevel(f"unknown trust level {name!r} (one of: {', '.join(self.trust_levels)})")
        return name

    def rung(self, name: str | None, step: int) -> str | None:
        """The level `step` rungs above (or below, negative) `name`; None past either end."""
        ladder = self.trust_review.ladder
        here = ladder.index(name) if name in ladder else 0
        there = here + step
        return ladder[there] if 0 <= there < len(ladder) else None

    def as_dict(self) -> dict[str, Any]:
        """The effective policy in the file's own vocabulary (for `waorch policy show`, the API)."""
        quiet = self.quiet_hours
        return {
            "default_trust_level": self.default_trust_level,
            "trust_levels": {n: {"per_minute": lv.per_minute, "per_day": lv.per_day}
                             for n, lv in self.trust_levels.items()},
            "jitter": {"amount": self.jitter, "distribution": self.jitter_distribution},
            "quiet_hours": None if quiet is None else {
                "start": hhmm(quiet.start), "end": hhmm(quiet.end),
                "fallback_timezone": quiet.fallback_timezone},
            "opt_out_keywords": list(self.opt_out_keywords),
            "recipient_daily_cap": self.recipient_daily_cap,
            "bursts": {"demand_factor": self.bursts.demand_factor,
                       "send_window_seconds": self.bursts.send_window,
                       "send_factor": self.bursts.send_factor,
                       "cooldown_seconds": {"send": self.bursts.cooldown_send,
                                            "demand": self.bursts.cooldown_demand}},
            "trust_review": {
                "ladder": list(self.trust_review.ladder),
                "promote": {n: vars(p) for n, p in self.trust_review.promote.items()},
                "demote": {"failure_rate": self.trust_review.demote_failure_rate,
                           "min_attempts": self.trust_review.demote_min_attempts,
                           "window_hours": self.trust_review.demote_window_hours,
                           "on_neighbour_ban": self.trust_review.demote_on_neighbour_ban,
                           "on_burst": self.trust_review.demote_on_burst},
            },
            "source": self.source,
        }


# --- validation ----------------------------------------------------------------------------------

def _levels(raw: Any) -> dict[str, TrustLevel]:
    if not isinstance(raw, dict) or not raw:
        raise PolicyError("trust_levels: define at least one level")
    levels = {}
    for name, spec in raw.items():
        where = f"trust_levels.{name}"
        if not isinstance(name, str) or not name or len(name) > 32 or not name[0].isalpha() \
                or not all(c.isalnum() or c in "_-" for c in name) or name != name.lower():
            raise PolicyError(f"{where}: level names are short lowercase words")
        spec = mapping(spec, where, ("per_minute", "per_day"))
        for key in ("per_minute", "per_day"):
            if key not in spec:
                raise PolicyError(f"{where}.{key}: required")
        levels[name] = TrustLevel(
            name, number(spec["per_minute"], f"{where}.per_minute", 0, 600, low_open=True),
            int(number(spec["per_day"], f"{where}.per_day", 1, 1_000_000, integer=True)))
    return levels


def _jitter(raw: Any) -> tuple[float, str]:
    if isinstance(raw, dict):
        spec = mapping(raw, "jitter", ("amount", "distribution"))
        amount = number(spec.get("amount", 0.3), "jitter.amount", 0, 0.9)
        distribution = spec.get("distribution", "uniform")
        if distribution not in _DISTRIBUTIONS:
            raise PolicyError(f"jitter.distribution: one of {', '.join(_DISTRIBUTIONS)}, "
                              f"not {distribution!r}")
        return amount, distribution
    return number(raw, "jitter", 0, 0.9), "uniform"


def _quiet(raw: Any) -> QuietHours | None:
    if raw is None:
        return None
    spec = mapping(raw, "quiet_hours", ("start", "end", "fallback_timezone"))
    start = clock(spec.get("start"), "quiet_hours.start")
    end = clock(spec.get("end"), "quiet_hours.end")
    if start == end:
        raise PolicyError("quiet_hours: start and end are the same time (use null to switch off)")
    zone = spec.get("fallback_timezone", "UTC")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"quiet_hours.fallback_timezone: unknown time zone {zone!r}") from None
    return QuietHours(start, end, str(zone))


def _keywords(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(k, str) and k.strip() for k in raw):
        raise PolicyError("opt_out_keywords: must be a list of non-empty words")
    found = ["STOP"]  # SPEC: STOP always opts out
    for word in raw:
        norm = normalize_keyword(word)
        if not norm:
            raise PolicyError(f"opt_out_keywords: {word!r} has no letters")
        if norm not in found:
            found.append(norm)
    return tuple(found)


def normalize_keyword(text: str) -> str:
    """Upper case, punctuation dropped, spaces collapsed: how keywords and replies are compared."""
    cleaned = "".join(c if c.isalnum() else " " for c in text.upper())
    return " ".join(cleaned.split())


def _bursts(raw: Any) -> Bursts:
    spec = mapping(raw, "bursts", ("demand_factor", "send_window_seconds", "send_factor",
                                    "cooldown_seconds"))
    cool = mapping(spec.get("cooldown_seconds", {}), "bursts.cooldown_seconds", ("send", "demand"))
    return Bursts(
        demand_factor=number(spec.get("demand_factor", 2.0), "bursts.demand_factor", 0, low_open=True),
        send_window=number(spec.get("send_window_seconds", 60), "bursts.send_window_seconds", 1, 3600),
        send_factor=number(spec.get("send_factor", 1.5), "bursts.send_factor", 0, low_open=True),
        cooldown_send=number(cool.get("send", 1800), "bursts.cooldown_seconds.send", 0, 7 * 86400),
        cooldown_demand=number(cool.get("demand", 600), "bursts.cooldown_seconds.demand", 0, 7 * 86400),
    )


def _review(raw: Any, levels: dict[str, TrustLevel]) -> TrustReview:
    spec = mapping(raw, "trust_review", ("ladder", "promote", "demote"))
    ladder = spec.get("ladder")
    if ladder is None:
        ladder = sorted(levels, key=lambda n: (levels[n].per_day, levels[n].per_minute))
    if not isinstance(ladder, list) or not ladder:
        raise PolicyError("trust_review.ladder: must be a list of level names, lowest first")
    for name in ladder:
        if name not in levels:
            raise PolicyError(f"trust_review.ladder: {name!r} is not one of trust_levels")
    if len(set(ladder)) != len(ladder) or set(ladder) != set(levels):
        raise PolicyError("trust_review.ladder: must name every trust level exactly once")
    promote = {}
    for name, rule in mapping(spec.get("promote", {}), "trust_review.promote", tuple(levels)).items():
        where = f"trust_review.promote.{name}"
        rule = mapping(rule, where, ("min_age_days", "min_sent", "max_failure_rate", "clean_days"))
        promote[name] = Promotion(
            min_age_days=number(rule.get("min_age_days", 0), f"{where}.min_age_days", 0),
            min_sent=int(number(rule.get("min_sent", 0), f"{where}.min_sent", 0, integer=True)),
            max_failure_rate=number(rule.get("max_failure_rate", 1.0), f"{where}.max_failure_rate", 0, 1),
            clean_days=number(rule.get("clean_days", 0), f"{where}.clean_days", 0),
        )
    demote = mapping(spec.get("demote", {}), "trust_review.demote",
                      ("failure_rate", "min_attempts", "window_hours", "on_neighbour_ban", "on_burst"))
    where = "trust_review.demote"
    return TrustReview(
        ladder=tuple(ladder), promote=promote,
        demote_failure_rate=number(demote.get("failure_rate", 0.2), f"{where}.failure_rate", 0, 1),
        demote_min_attempts=int(number(demote.get("min_attempts", 10), f"{where}.min_attempts", 1,
                                        integer=True)),
        demote_window_hours=number(demote.get("window_hours", 24), f"{where}.window_hours", 0, 24 * 30,
                                    low_open=True),
        demote_on_neighbour_ban=flag(demote.get("on_neighbour_ban", True), f"{where}.on_neighbour_ban"),
        demote_on_burst=flag(demote.get("on_burst", True), f"{where}.on_burst"),
    )


def build(document: dict[str, Any], source: str = "built-in") -> Policy:
    """A Policy from a complete document (defaults already merged); PolicyError when invalid."""
    doc = mapping(document, "policy", _TOP_KEYS)
    levels = _levels(doc.get("trust_levels"))
    default = doc.get("default_trust_level")
    if default not in levels:
        raise PolicyError(f"default_trust_level: {default!r} is not one of trust_levels "
                          f"({', '.join(levels)})")
    amount, distribution = _jitter(doc.get("jitter", 0.3))
    cap = doc.get("recipient_daily_cap")
    return Policy(
        default_trust_level=default, trust_levels=levels, jitter=amount,
        jitter_distribution=distribution, quiet_hours=_quiet(doc.get("quiet_hours")),
        opt_out_keywords=_keywords(doc.get("opt_out_keywords", ["STOP"])),
        recipient_daily_cap=None if cap is None else int(number(
            cap, "recipient_daily_cap", 1, 10_000, integer=True)),
        bursts=_bursts(doc.get("bursts", {})), trust_review=_review(doc.get("trust_review", {}), levels),
        source=source,
    )


# --- loading -------------------------------------------------------------------------------------

def load_file(path: str | os.PathLike[str]) -> Policy:
    """The policy of `path` laid over the built-in defaults; PolicyError naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    document = parse_text(text, str(path))
    mapping(document, str(path), _TOP_KEYS)
    base = yaml.safe_load(resources.files("waorch").joinpath(DEFAULT_FILE).read_text())
    levels = document.get("trust_levels")
    review = document.get("trust_review")
    if isinstance(levels, dict) and not (isinstance(review, dict) and "promote" in review):
        # own levels without own promotion rules: keep the default rules that still apply
        rules = base["trust_review"]["promote"]
        base["trust_review"]["promote"] = {name: rule for name, rule in rules.items() if name in levels}
    try:
        return build(merge(base, document), source=str(path))
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def load() -> Policy:
    """The policy this process should use now: WAORCH_POLICY_FILE, else the built-in one."""
    path = settings.get().policy_file
    if path:
        return load_file(path)
    return build(default_document())


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.policy: Policy | None = None
        self.stamp: tuple | None = None
        self.checked = 0.0


_cache = _Cache()


def _stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (None, None)
    return (st.st_mtime_ns, st.st_size)


def get() -> Policy:
    """The process-wide policy; re-read when the file changes (a broken edit keeps the old one)."""
    conf = settings.get()
    # which policy: decided on every call (cheap); whether its file changed: every RELOAD_CHECK s
    which = conf.policy_file or f"built-in:{conf.per_minute}:{conf.jitter}"
    with _cache.lock:
        now = time.monotonic()
        same = _cache.policy is not None and _cache.stamp is not None and _cache.stamp[0] == which
        if same and now - _cache.checked < RELOAD_CHECK:
            return _cache.policy
        _cache.checked = now
        stamp = (which, *(_stamp(conf.policy_file) if conf.policy_file else ()))
        if same and stamp == _cache.stamp:
            return _cache.policy
        try:
            _cache.policy = load()
        except PolicyError:
            if not same:
                raise
            log.exception("policy file changed but is invalid; keeping the previous policy")
            return _cache.policy
        _cache.stamp = stamp
        return _cache.policy


def reset() -> None:
    """Forget the cached policy (tests, after changing WAORCH_POLICY_FILE)."""
    with _cache.lock:
        _cache.policy, _cache.stamp, _cache.checked = None, None, 0.0
