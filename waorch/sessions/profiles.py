"""Linked-device profiles: an inventory shipped with waorch and a sticky profile per phone."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import redis

from waorch.core import lua, settings

PROFILES_USAGE = "profiles:usage"  # ZSET profile id -> phones holding it
ASSIGN = lua.Script("sessions/assign_profile", keys=("phone_profile", "usage"), args=("ceiling",),
                    rest="profile_ids")


def phone_profile_key(phone: str) -> str:
    return f"phone:profile:{phone}"


class NoProfileCapacity(RuntimeError):
    """Every profile of the inventory is shared by as many phones as allowed."""


@cache
def inventory() -> tuple[dict, ...]:
    """The device profiles of waorch/device_profiles.json."""
    data = json.loads(resources.files("waorch").joinpath("device_profiles.json").read_text())
    return tuple(data["profiles"])


def by_id(profile_id: str) -> dict | None:
    return next((p for p in inventory() if p["id"] == profile_id), None)


def assign(r: redis.Redis, phone: str, ceiling: int | None = None) -> dict:
    """The phone's sticky profile (assigned now if it has none); NoProfileCapacity when full."""
    ceiling = ceiling if ceiling is not None else settings.get().profile_ceiling
    ids = [p["id"] for p in inventory()]
    outcome, profile_id = ASSIGN(r, phone_profile=phone_profile_key(phone), usage=PROFILES_USAGE,
                                 ceiling=ceiling, profile_ids=ids)
    if outcome != "ok":
        raise NoProfileCapacity("no device profile capacity: every profile is at its ceiling")
    return dict(by_id(profile_id) or {})


def free_slots(r: redis.Redis, ceiling: int | None = None) -> int:
    """Phones that could still get a profile."""
    ceiling = ceiling if ceiling is not None else settings.get().profile_ceiling
    used = dict(r.zrange(PROFILES_USAGE, 0, -1, withscores=True))
    return sum(max(0, ceiling - int(used.get(p["id"], 0))) for p in inventory())
