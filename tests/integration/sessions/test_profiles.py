"""Device profiles: sticky per phone, spread over the inventory, capped, inventory alerts."""

from __future__ import annotations

import threading

import pytest

from waorch.alerts import events as alert_events
from waorch.fleet import lifecycle
from waorch.sessions import profiles


def test_inventory_is_plausible():
    inventory = profiles.inventory()
    assert len(inventory) >= 15
    assert len({p["id"] for p in inventory}) == len(inventory)
    for p in inventory:
        assert p["device_name"] and p["browser"] and p["os"] and p["platform"]


def test_a_phone_keeps_its_profile(r):
    first = profiles.assign(r, "491510000001")
    assert profiles.assign(r, "491510000001") == first
    assert profiles.by_id(first["id"]) == first


def test_profiles_spread_then_fill_up(r):
    n = len(profiles.inventory())
    got = [profiles.assign(r, f"4915100{i:05d}", ceiling=2)["id"] for i in range(2 * n)]
    assert len(set(got[:n])) == n  # least-shared first: every profile used once before reuse
    assert profiles.free_slots(r, ceiling=2) == 0
    with pytest.raises(profiles.NoProfileCapacity):
        profiles.assign(r, "491519999999", ceiling=2)
    assert profiles.assign(r, "491510000000", ceiling=2)["id"] == got[0]  # sticky still works


def test_concurrent_assignment_respects_the_ceiling(r, redis_url):
    import redis as redis_lib

    n = len(profiles.inventory())
    results: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        for i in range(10):
            try:
                pid = profiles.assign(client, f"4916{k:03d}{i:04d}", ceiling=1)["id"]
            except profiles.NoProfileCapacity:
                pid = "none"
            with lock:
                results.append(pid)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    used = [p for p in results if p != "none"]
    assert len(used) == n and len(set(used)) == n


def test_low_profile_inventory_raises_and_resolves_an_alert(r, monkeypatch):
    monkeypatch.setenv("WAORCH_PROFILE_CEILING", "1")
    monkeypatch.setenv("WAORCH_LOW_INVENTORY", "3")
    from waorch.core import settings

    settings.get.cache_clear()
    n = len(profiles.inventory())
    for i in range(n - 2):
        profiles.assign(r, f"4915100{i:05d}")
    lifecycle.check_inventory(r)
    active = {(a["kind"], a["subject"]) for a in alert_events.active_alerts(r)}
    assert (alert_events.LOW_INVENTORY, "profiles") in active
    lifecycle.check_inventory(r)  # still low: no duplicate event
    raised = [e for e in alert_events.list_events(r) if e["subject"] == "profiles"]
    assert [e["state"] for e in raised] == ["raised"]
    monkeypatch.setenv("WAORCH_PROFILE_CEILING", "5")
    settings.get.cache_clear()
    lifecycle.check_inventory(r)
    states = [e["state"] for e in alert_events.list_events(r) if e["subject"] == "profiles"]
    assert states == ["resolved", "raised"]
