"""The simulator's ban model: thresholds parsing and the rules it applies."""

from __future__ import annotations

import json

import pytest

from waorch.simulator.ban_model import (
    CODE_BLOCKED,
    CODE_NON_CONTACTS,
    CODE_SAME_TEXT,
    DAY,
    MAX_TEXTS,
    AccountActivity,
    BanThresholds,
    text_key,
)


def test_default_bans_nobody():
    thresholds = BanThresholds.parse(None)
    assert not thresholds.enabled
    activity = AccountActivity()
    assert all(activity.on_send(i * 0.01, thresholds, first_contact=True, person=f"1555{i:07d}",
                                text="same") is None for i in range(500))
    assert all(activity.on_source(f"127.0.0.{i}", i, thresholds) is None for i in range(1, 50))
    assert all(activity.on_block(f"1555{i:07d}", i, thresholds) is None for i in range(50))
    # The 24 h rules record nothing while off: an idle default costs nothing.
    assert activity.non_contact_sends == [] and activity.texts == {}


def test_per_minute_counts_a_sliding_window():
    thresholds = BanThresholds(per_minute=3)
    activity = AccountActivity()
    assert [activity.on_send(t, thresholds) for t in (0, 20, 40)] == [None, None, None]
    assert activity.on_send(60.5, thresholds) is None  # the send at 0 left the window
    ban = activity.on_send(61, thresholds)  # 20, 40, 60.5, 61
    assert ban is not None and ban.reason.startswith("rate: 4 sends in 60 s") and ban.code is None


def test_burst_is_judged_on_ten_seconds():
    thresholds = BanThresholds(burst_10s=2)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds) is None
    assert activity.on_send(5, thresholds) is None
    assert activity.on_send(10.5, thresholds) is None  # 0 is out of the window: 5, 10.5
    ban = activity.on_send(11, thresholds)
    assert ban is not None and ban.reason.startswith("burst: 3 sends in 10 s")


def test_steady_pace_under_both_limits_is_never_banned():
    thresholds = BanThresholds(per_minute=6, burst_10s=3)
    activity = AccountActivity()
    assert all(activity.on_send(i * 10.0, thresholds) is None for i in range(100))


def test_distinct_sources_in_a_day():
    thresholds = BanThresholds(max_sources=1)
    activity = AccountActivity()
    assert activity.on_source("127.0.0.2", 0, thresholds) is None
    assert activity.on_source("127.0.0.2", 3600, thresholds) is None  # same address again
    ban = activity.on_source("127.0.0.3", 7200, thresholds)
    assert ban is not None and ban.reason.startswith("sources: 2 distinct addresses")


def test_sources_older_than_a_day_are_forgotten():
    thresholds = BanThresholds(max_sources=1)
    activity = AccountActivity()
    assert activity.on_source("127.0.0.2", 0, thresholds) is None
    assert activity.on_source("127.0.0.3", 86400 + 1, thresholds) is None


def test_non_contacts_count_only_first_contacts_in_24_hours():
    thresholds = BanThresholds(non_contacts_per_day=2)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds, first_contact=True, person="15550000001") is None
    assert activity.on_send(10, thresholds, first_contact=True, person="15550000002") is None
    # Messages inside conversations never count, however many.
    assert all(activity.on_send(20 + i, thresholds, first_contact=False, person="15550000001") is None
               for i in range(50))
    ban = activity.on_send(100, thresholds, first_contact=True, person="15550000003")
    assert ban is not None and ban.code == CODE_NON_CONTACTS
    assert ban.reason.startswith("non-contacts: 3 messages to people without a conversation")


def test_non_contacts_window_rolls():
    thresholds = BanThresholds(non_contacts_per_day=1)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds, first_contact=True, person="15550000001") is None
    assert activity.on_send(DAY + 1, thresholds, first_contact=True, person="15550000002") is None
    assert activity.on_send(DAY + 2, thresholds, first_contact=True, person="15550000003").code == 101


def test_same_text_counts_different_people_after_normalising():
    thresholds = BanThresholds(same_text_per_day=2)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds, person="15550000001", text="Hello  World") is None
    assert activity.on_send(1, thresholds, person="15550000001", text="hello world") is None  # same person
    assert activity.on_send(2, thresholds, person="15550000002", text=" HELLO\tworld ") is None
    assert activity.on_send(3, thresholds, person="15550000003", text="another text") is None
    ban = activity.on_send(4, thresholds, person="15550000004", text="Ｈｅｌｌｏ world")  # NFKC: same
    assert ban is not None and ban.code == CODE_SAME_TEXT
    assert ban.reason.startswith("same text: one message to 3 people")


def test_same_text_forgets_after_a_day_and_stays_bounded():
    thresholds = BanThresholds(same_text_per_day=1)
    activity = AccountActivity()
    assert activity.on_send(0, thresholds, person="15550000001", text="promo") is None
    assert activity.on_send(DAY + 1, thresholds, person="15550000002", text="promo") is None
    for i in range(MAX_TEXTS + 10):
        activity.on_send(2 * DAY + i, thresholds, person="15550000001", text=f"text {i}")
    assert len(activity.texts) <= MAX_TEXTS


def test_text_key_ignores_case_and_spacing_but_not_words():
    assert text_key("Hi there") == text_key("  hi   THERE ")
    assert text_key("Hi there") != text_key("Hi their")
    assert text_key("   ") is None


def test_blocks_count_distinct_people_in_a_day():
    thresholds = BanThresholds(blocks_per_day=2)
    activity = AccountActivity()
    assert activity.on_block("15550000001", 0, thresholds) is None
    assert activity.on_block("15550000001", 5, thresholds) is None  # the same person again
    assert activity.on_block("15550000002", 10, thresholds) is None
    assert activity.blocks_today(10) == 2
    ban = activity.on_block("15550000003", 20, thresholds)
    assert ban is not None and ban.code == CODE_BLOCKED and ban.reason.startswith("blocked: 3 people")
    assert activity.blocks_today(DAY + 30) == 0


def test_activity_survives_a_round_trip_through_json():
    thresholds = BanThresholds(non_contacts_per_day=5, same_text_per_day=5, max_sources=3)
    activity = AccountActivity()
    activity.on_send(1, thresholds, first_contact=True, person="15550000001", text="hi")
    activity.on_source("127.0.0.2", 2, thresholds)
    activity.on_block("15550000009", 3, thresholds)
    again = AccountActivity.from_dict(json.loads(json.dumps(activity.to_dict())))
    assert again == activity


def test_parse_json_text_and_file(tmp_path):
    text = '{"per_minute": 6, "burst_10s": 3, "max_sources": 1, "same_text_per_day": 20}'
    assert BanThresholds.parse(text) == BanThresholds(6, 3, 1, same_text_per_day=20)
    path = tmp_path / "ban.json"
    path.write_text(json.dumps({"burst_10s": 2}))
    parsed = BanThresholds.parse(str(path))
    assert parsed == BanThresholds(burst_10s=2) and parsed.enabled
    assert parsed.as_dict() == {"per_minute": None, "burst_10s": 2, "max_sources": None,
                                "non_contacts_per_day": None, "blocks_per_day": None,
                                "same_text_per_day": None}


@pytest.mark.parametrize("text, message", [
    ('{"per_minute": 0}', "positive integer"),
    ('{"per_minute": "6"}', "positive integer"),
    ('{"burst_10s": true}', "positive integer"),
    ('{"blocks_per_day": -1}', "positive integer"),
    ('{"per_hour": 5}', "unknown ban model keys: per_hour"),
    ("[1, 2]", "JSON object"),
    ("/no/such/file.json", "neither JSON nor a readable file"),
])
def test_parse_rejects_bad_input_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        BanThresholds.parse(text)
