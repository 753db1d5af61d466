"""A policy document before it becomes a Policy: its text (JSON or YAML), the built-in defaults it
is laid over, and the checks of single values that name the key at fault."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from waorch.core import settings

DEFAULT_FILE = "policy_default.yaml"
_MERGED_SECTIONS = ("quiet_hours", "bursts", "trust_review")


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message names the file and the key."""



def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def mapping(value: Any, where: str, known: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be a mapping")
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return value


def number(value: Any, where: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}: must be a number, not {value!r}")
    if integer and int(value) != value:
        raise PolicyError(f"{where}: must be a whole number, not {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise PolicyError(f"{where}: must be {'above' if low_open else 'at least'} {low:g}, not {value!r}")
    if high is not None and value > high:
        raise PolicyError(f"{where}: must be at most {high:g}, not {value!r}")
    return int(value) if integer else float(value)


def flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: must be true or false, not {value!r}")
    return value


def clock(value: Any, where: str) -> int:
    text = str(value) if isinstance(value, str) else ""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise PolicyError(f"{where}: must be a time like \"21:00\", not {value!r}")
    hours, minutes = int(parts[0]), int(parts[1])
    if hours > 23 or minutes > 59:
        raise PolicyError(f"{where}: {value!r} is not a time of day")
    return hours * 60 + minutes


def default_document() -> dict[str, Any]:
    """The built-in policy as a document, with the spine's WAORCH_PER_MINUTE/WAORCH_JITTER applied."""
    document = yaml.safe_load(resources.files("waorch").joinpath(DEFAULT_FILE).read_text())
    conf = settings.get()
    # Kept from the spine: without a policy file these two settings tune the default level.
    level = document["trust_levels"][document["default_trust_level"]]
    level["per_minute"] = conf.per_minute
    document["jitter"] = conf.jitter
    return document


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`: top-level keys replace, the sections in _MERGED_SECTIONS merge."""
    merged = dict(base)
    for key, value in overlay.items():
        if key in _MERGED_SECTIONS and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def parse_text(text: str, name: str = "policy") -> dict[str, Any]:
    """A policy document from JSON or YAML text."""
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{name}: neither JSON nor YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PolicyError(f"{name}: must hold a mapping of policy keys")
    return document
