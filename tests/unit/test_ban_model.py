"""The simulator's ban model: thresholds parsing and the rules it applies."""

from __future__ import annotations

import json

import pytest

from waorch.simulator.ban_model import AccountActivity, BanThresholds


def test_default_bans_nobody():
    thresholds = BanThresholds.parse(None)
    assert not thresholds.enabled
    activity = AccountActivity()
    assert all(activity.on_send(i * 0.01, thresholds) is None for i in range(500))
    assert all(activity.on_source(f"127.0.0.{i}", i, thresholds) is None for i in range(1, 50))


def test_per_minute_counts_a_sliding_window():
    thresholds = BanThresholds(per_minute=3)
    activity = AccountActivity()
    assert [activity.on_send(t, thresholds) for t in (0, 20, 40)] == [None, None, None]
    assert activity.on_send(60.5, thresholds) is None  # the send at 0 left the window
    reason = activity.on_send(61, thresholds)  # 20, 40, 60.5, 61
    assert reason is not None and reason.startswith("rate: 4 sends in 60 s")


def test_burst_is_judged_on_ten_seconds():
    thresholds = BanThresholds(burst_10s=2)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds) is None
    assert activity.on_send(5, thresholds) is None
    assert activity.on_send(10.5, thresholds) is None  # 0 is out of the window: 5, 10.5
    reason = activity.on_send(11, thresholds)
    assert reason is not None and reason.startswith("burst: 3 sends in 10 s")


def test_steady_pace_under_both_limits_is_never_banned():
    thresholds = BanThresholds(per_minute=6, burst_10s=3)
    activity = AccountActivity()
    assert all(activity.on_send(i * 10.0, thresholds) is None for i in range(100))


def test_distinct_sources_in_a_day():
    thresholds = BanThresholds(max_sources=1)
    activity = AccountActivity()
    assert activity.on_source("127.0.0.2", 0, thresholds) is None
    assert activity.on_source("127.0.0.2", 3600, thresholds) is None  # same address again
    reason = activity.on_source("127.0.0.3", 7200, thresholds)
    assert reason is not None and reason.startswith("sources: 2 distinct addresses")


def test_sources_older_than_a_day_are_forgotten():
    thresholds = BanThresholds(max_sources=1)
    activity = AccountActivity()
    assert activity.on_source("127.0.0.2", 0, thresholds) is None
    assert activity.on_source("127.0.0.3", 86400 + 1, thresholds) is None


def test_parse_json_text_and_file(tmp_path):
    text = '{"per_minute": 6, "burst_10s": 3, "max_sources": 1}'
    assert BanThresholds.parse(text) == BanThresholds(6, 3, 1)
    path = tmp_path / "ban.json"
    path.write_text(json.dumps({"burst_10s": 2}))
    parsed = BanThresholds.parse(str(path))
    assert parsed == BanThresholds(burst_10s=2) and parsed.enabled
    assert parsed.as_dict() == {"per_minute": None, "burst_10s": 2, "max_sources": None}


@pytest.mark.parametrize("text, message", [
    ('{"per_minute": 0}', "positive integer"),
    ('{"per_minute": "6"}', "positive integer"),
    ('{"burst_10s": true}', "positive integer"),
    ('{"per_hour": 5}', "unknown ban model keys: per_hour"),
    ("[1, 2]", "JSON object"),
    ("/no/such/file.json", "neither JSON nor a readable file"),
])
def test_parse_rejects_bad_input_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        BanThresholds.parse(text)
