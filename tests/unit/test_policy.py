"""The policy file: defaults, merging, validation with clear errors, reloading; opt-out keywords and
quiet-hour windows in the recipient's time zone (pure logic, no Redis)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from waorch.core import settings
from waorch.policy import pacing, recipient_protection
from waorch.policy import rules as policy


@pytest.fixture(autouse=True)
def clean_policy(monkeypatch):
    monkeypatch.delenv("WAORCH_POLICY_FILE", raising=False)
    monkeypatch.delenv("WAORCH_PER_MINUTE", raising=False)
    monkeypatch.delenv("WAORCH_JITTER", raising=False)
    settings.get.cache_clear()
    policy.reset()
    yield
    settings.get.cache_clear()
    policy.reset()


def write(tmp_path, document, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return path


def test_builtin_defaults_are_the_spec_defaults():
    pol = policy.load()
    assert pol.default_trust_level == "new"
    assert {n: (lv.per_minute, lv.per_day) for n, lv in pol.trust_levels.items()} == {
        "restricted": (1, 20), "new": (2, 50), "warming": (5, 200), "trusted": (12, 1000)}
    assert pol.trust_review.ladder == ("restricted", "new", "warming", "trusted")  # ranked by budget
    assert pol.jitter == 0.3 and pol.jitter_distribution == "uniform"
    assert (pol.quiet_hours.start, pol.quiet_hours.end) == (21 * 60, 8 * 60)
    assert pol.recipient_daily_cap == 3
    assert pol.opt_out_keywords[0] == "STOP" and "UNSUBSCRIBE" in pol.opt_out_keywords
    # SPEC: the minimum gap is 60 / per_minute × (1 − jitter)
    assert pacing.pace_for({"trust_level": "new"}, pol).min_gap == pytest.approx(21.0)


def test_spine_settings_tune_the_builtin_default_level_only(monkeypatch, tmp_path):
    monkeypatch.setenv("WAORCH_PER_MINUTE", "30")
    monkeypatch.setenv("WAORCH_JITTER", "0.1")
    settings.get.cache_clear()
    pol = policy.load()
    assert pol.trust_levels["new"].per_minute == 30 and pol.jitter == 0.1
    assert pol.trust_levels["trusted"].per_minute == 12
    monkeypatch.setenv("WAORCH_POLICY_FILE", str(write(tmp_path, {"jitter": 0.2})))
    settings.get.cache_clear()
    from_file = policy.load()
    assert from_file.trust_levels["new"].per_minute == 2 and from_file.jitter == 0.2


@pytest.mark.parametrize("name", ["policy.yaml", "policy.json"])
def test_file_overlays_defaults_json_or_yaml(tmp_path, name):
    path = write(tmp_path, {"trust_levels": {"careful": {"per_minute": 1, "per_day": 10},
                                             "fast": {"per_minute": 20, "per_day": 500}},
                            "default_trust_level": "careful",
                            "jitter": {"amount": 0.5, "distribution": "triangular"},
                            "quiet_hours": {"start": "22:30", "end": "07:15"},
                            "opt_out_keywords": ["halt", "Basta!"],
                            "recipient_daily_cap": None,
                            "bursts": {"cooldown_seconds": {"send": 60}}}, name)
    pol = policy.load_file(path)
    assert list(pol.trust_levels) == ["careful", "fast"]  # levels are replaced, not merged
    assert pol.trust_review.ladder == ("careful", "fast")
    assert set(pol.trust_review.promote) == set()  # default rules name levels that are gone
    assert (pol.jitter, pol.jitter_distribution) == (0.5, "triangular")
    assert (pol.quiet_hours.start, pol.quiet_hours.end) == (22 * 60 + 30, 7 * 60 + 15)
    assert pol.opt_out_keywords == ("STOP", "HALT", "BASTA")  # STOP always; normalized
    assert pol.recipient_daily_cap is None
    assert pol.bursts.cooldown_send == 60 and pol.bursts.cooldown_demand == 600  # section merged
    assert pol.source == str(path)


@pytest.mark.parametrize("document,message", [
    ({"jiter": 0.2}, "unknown key(s) jiter"),
    ({"jitter": 1.5}, "jitter: must be at most 0.9"),
    ({"jitter": "lots"}, "jitter: must be a number"),
    ({"jitter": {"amount": 0.2, "distribution": "gaussian"}}, "jitter.distribution"),
    ({"trust_levels": {"new": {"per_minute": 0, "per_day": 5}}},
     "trust_levels.new.per_minute: must be above 0"),
    ({"trust_levels": {"new": {"per_minute": 2}}}, "trust_levels.new.per_day: required"),
    ({"trust_levels": {"new": {"per_minute": 2, "per_day": 2.5}}}, "per_day: must be a whole number"),
    ({"trust_levels": {"New Level": {"per_minute": 2, "per_day": 5}}}, "short lowercase words"),
    ({"trust_levels": {}}, "at least one level"),
    ({"trust_levels": {"slow": {"per_minute": 1, "per_day": 5}}}, "default_trust_level: 'new'"),
    ({"default_trust_level": "vip"}, "default_trust_level: 'vip' is not one of"),
    ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start: must be a time"),
    ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "not a time of day"),
    ({"quiet_hours": {"start": "08:00", "end": "08:00"}}, "start and end are the same"),
    ({"quiet_hours": {"start": "21:00", "end": "08:00", "fallback_timezone": "Mars/Base"}},
     "unknown time zone"),
    ({"opt_out_keywords": "STOP"}, "opt_out_keywords: must be a list"),
    ({"opt_out_keywords": ["!!!"]}, "has no letters"),
    ({"recipient_daily_cap": 0}, "recipient_daily_cap: must be at least 1"),
    ({"recipient_daily_cap": True}, "recipient_daily_cap: must be a number"),
    ({"bursts": {"send_factor": -1}}, "bursts.send_factor: must be above 0"),
    ({"bursts": {"cooldown_seconds": {"sends": 5}}}, "bursts.cooldown_seconds: unknown key(s) sends"),
    ({"trust_review": {"ladder": ["new", "trusted"]}}, "must name every trust level exactly once"),
    ({"trust_review": {"ladder": ["new", "nope"]}}, "'nope' is not one of trust_levels"),
    ({"trust_review": {"promote": {"vip": {}}}}, "trust_review.promote: unknown key(s) vip"),
    ({"trust_review": {"promote": {"warming": {"min_sent": -1}}}}, "promote.warming.min_sent"),
    ({"trust_review": {"demote": {"on_burst": "yes"}}}, "on_burst: must be true or false"),
])
def test_invalid_files_name_the_file_and_the_key(tmp_path, document, message):
    path = write(tmp_path, document)
    with pytest.raises(policy.PolicyError) as info:
        policy.load_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must hold a mapping"),
    ("a: [unclosed", "neither JSON nor YAML"),
])
def test_unparseable_files(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(policy.PolicyError, match=message):
        policy.load_file(path)
    with pytest.raises(policy.PolicyError, match="cannot read"):
        policy.load_file(tmp_path / "missing.yaml")


def test_get_reloads_a_changed_file_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    path = write(tmp_path, {"jitter": 0.1})
    monkeypatch.setenv("WAORCH_POLICY_FILE", str(path))
    monkeypatch.setattr(policy, "RELOAD_CHECK", 0.0)
    settings.get.cache_clear()
    assert policy.get().jitter == 0.1
    path.write_text(yaml.safe_dump({"jitter": 0.2}))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert policy.get().jitter == 0.2
    path.write_text("jitter: [broken")
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    assert policy.get().jitter == 0.2  # a bad edit does not take the running policy down


def test_ladder_steps(tmp_path):
    pol = policy.load()
    assert pol.rung("new", +1) == "warming" and pol.rung("new", -1) == "restricted"
    assert pol.rung("trusted", +1) is None and pol.rung("restricted", -1) is None
    assert pol.level("unknown-level").name == "restricted"  # unknown: the safe bottom rung


@pytest.mark.parametrize("text,keyword", [
    ("STOP", "STOP"), ("stop", "STOP"), (" Stop. ", "STOP"), ("stop!!", "STOP"),
    ("STOP sending me this", "STOP"), ("unsubscribe please", "UNSUBSCRIBE"),
    ("Unsubscribe", "UNSUBSCRIBE"), ("cancel", "CANCEL"), ("opt-out", "OPT OUT"),
    ("Hello, can you stop by?", None), ("cancel my order", None), ("", None), ("stopwatch", None),
])
def test_opt_out_keywords(text, keyword):
    assert recipient_protection.opt_out_keyword(text, policy.load()) == keyword


def _local(ts: float, zone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%H:%M")


def test_quiet_window_in_the_recipients_time_zone():
    quiet = policy.load().quiet_hours
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    # San Francisco (UTC-8 in January): quiet 05:00-16:00 UTC
    assert recipient_protection.quiet_window("14155550123", quiet, winter) == f"{5 * 3600},{16 * 3600}"
    # Berlin mobile (UTC+1 in January): quiet 20:00-07:00 UTC
    assert recipient_protection.quiet_window("4915123456789", quiet, winter) == f"{20 * 3600},{7 * 3600}"
    summer = datetime(2026, 7, 15, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert recipient_protection.quiet_window("4915123456789", quiet, summer) == f"{19 * 3600},{6 * 3600}"
    assert recipient_protection.quiet_window("14155550123", None, winter) == ""


def test_quiet_until_is_the_next_local_morning():
    quiet = policy.load().quiet_hours
    for phone, zone in (("14155550123", "America/Los_Angeles"), ("4915123456789", "Europe/Berlin"),
                        ("919876543210", "Asia/Calcutta")):
        start = datetime(2026, 3, 2, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
        for hour in range(0, 48):
            at = start + hour * 3600 + 17 * 60
            window = recipient_protection.quiet_window(phone, quiet, at)
            local = _local(at, zone)
            until = recipient_protection.quiet_until(window, at)
            in_quiet = local >= "21:00" or local < "08:00"
            assert (until is not None) == in_quiet, (phone, local)
            if until is not None:
                assert _local(until, zone) == "08:00" and 0 < until - at <= 11 * 3600


def test_numbers_in_several_zones_get_the_union_of_their_nights():
    quiet = policy.load().quiet_hours
    at = datetime(2026, 1, 15, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    # Brazil country-level zones span UTC-5..UTC-2 (a number unknown to the geo data)
    zones = recipient_protection.recipient_zones("5511987654321")
    assert zones == ["America/Sao_Paulo"]  # this one is specific
    start, end = (int(x) for x in recipient_protection.quiet_window("5511987654321", quiet, at).split(","))
    assert (start, end) == (0, 11 * 3600)  # 21:00-08:00 at UTC-3
    # an invalid-but-parseable number falls back to its country's zones (Europe/Berlin)
    assert recipient_protection.recipient_zones("491510000001") == ["Europe/Berlin"]
    # an Australian mobile may be anywhere from Cocos (UTC+6:30) to Lord Howe (UTC+11 in January):
    # quiet from 21:00 in the east (10:00 UTC) until 08:00 in the west (01:30 UTC)
    window = recipient_protection.quiet_window("61412345678", quiet, at)
    assert window == f"{10 * 3600},{1 * 3600 + 1800}"
    # a night longer than MAX_QUIET_HOURS is not stretched further: the middle zone's night
    russia = recipient_protection.quiet_window("79161234567", quiet, at)
    s, e = (int(x) for x in russia.split(","))
    assert (e - s) % 86400 == 11 * 3600


def test_another_policy_file_takes_effect_at_once(tmp_path, monkeypatch):
    first = write(tmp_path, {"jitter": 0.1}, "a.yaml")
    second = write(tmp_path, {"jitter": 0.2}, "b.yaml")
    monkeypatch.setenv("WAORCH_POLICY_FILE", str(first))
    settings.get.cache_clear()
    assert policy.get().jitter == 0.1
    monkeypatch.setenv("WAORCH_POLICY_FILE", str(second))
    settings.get.cache_clear()
    assert policy.get().jitter == 0.2  # no wait for the modification-time check
    monkeypatch.delenv("WAORCH_POLICY_FILE")
    settings.get.cache_clear()
    assert policy.get().source == "built-in"
