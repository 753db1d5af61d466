"""Pure parts of the simulated network: LIDs, media descriptions, account records."""

from __future__ import annotations

import json
import random

import pytest

from waorch.simulator.accounts import MAX_PENDING, Account
from waorch.simulator.lids import is_lid, lid_of, phone_of
from waorch.simulator.logs import Message, MessageLog
from waorch.simulator.media import MAX_SIZE, media_problem


def test_a_lid_is_stable_opaque_and_maps_back():
    phones = ["15550000001", "15550000002", "4915123450088", "1234567", "999999999999999"]
    lids = [lid_of(p) for p in phones]
    assert lids == [lid_of(p) for p in phones]  # stable
    for phone, lid in zip(phones, lids, strict=True):
        digits = lid.removesuffix("@lid")
        assert is_lid(lid) and len(digits) == 16 and phone not in digits
        assert phone_of(lid) == phone == phone_of(digits)
    assert len(set(lids)) == len(lids)
    # neighbouring numbers get unrelated LIDs
    assert abs(int(lids[0][:16]) - int(lids[1][:16])) > 10**9


def test_lids_of_many_random_numbers_are_distinct_and_invertible():
    rng = random.Random(7)
    phones = {str(rng.randrange(10**6, 10**15)) for _ in range(20_000)}
    lids = {lid_of(p) for p in phones}
    assert len(lids) == len(phones)
    assert all(phone_of(lid_of(p)) == p for p in phones)


@pytest.mark.parametrize("text", ["", "abc@lid", "12@lid", "1" * 17 + "@lid", "15550000001"[:3]])
def test_what_is_no_lid_of_a_number_maps_to_nothing(text):
    assert phone_of(text) is None


def test_media_descriptions():
    assert media_problem(None) is None
    assert media_problem({"url": "https://x/a.pdf"}) is None  # no kind: accepted as before
    for kind, limit in MAX_SIZE.items():
        assert media_problem({"kind": kind, "size": limit}) is None
        assert media_problem({"kind": kind, "size": limit + 1})[0] == "MEDIA_TOO_LARGE"
    assert media_problem({"kind": "document", "mimetype": "application/zip"}) is None
    assert media_problem({"kind": "ptt", "mimetype": "audio/ogg; codecs=opus"}) is None
    for bad in ({"kind": "gif"}, {"kind": "image", "mimetype": "video/mp4"},
                {"kind": "image", "size": -1}, {"kind": "image", "size": True},
                {"kind": "image", "mimetype": "jpeg"}, {"kind": "document", "filename": ""},
                {"kind": "document", "sha256": "ab"}, "image"):
        assert media_problem(bad)[0] == "INVALID_MEDIA", bad


def test_conversations_remember_whether_the_phone_is_known():
    account = Account(phone="15550000001")
    account.converse("15550000002", 1.0, phone_known=False)
    assert account.has_conversation("15550000002") and not account.knows_phone_of("15550000002")
    account.converse("15550000002", 2.0)  # later seen by phone
    assert account.knows_phone_of("15550000002")
    assert account.conversations["15550000002"] == 1.0  # since the first contact
    assert not account.knows_phone_of("15550000003")


def test_pending_events_are_bounded_oldest_first():
    account = Account(phone="15550000001")
    for n in range(MAX_PENDING + 5):
        account.queue({"n": n})
    assert len(account.pending) == MAX_PENDING and account.pending[0] == {"n": 5}


def test_an_account_survives_a_round_trip_through_json():
    account = Account(phone="15550000001", creds="sim1.x", session="s", device={"os": "Linux"},
                      banned_reason="r", banned_code=101, banned_at=3.0, reachout_until=9.0, sent=4,
                      second_connections=2, duplicate_sends=1, duplicates_delivered=1)
    account.converse("15550000002", 1.0, phone_known=False)
    account.converse("15550000003", 2.0)
    account.blocked_by = {"15550000004": 5.0}
    account.queue({"ev": "message", "text": "hi"})
    again = Account.from_dict(json.loads(json.dumps(account.to_dict())))
    assert again.to_dict() == account.to_dict()
    assert again.lid_only == {"15550000002"} and again.view(0) == account.view(0)


def test_a_message_is_encoded_again_only_when_its_status_moves():
    message = Message(id="3EB0A", sender="15550000001", to="15550000002", text="hi", media=None, at=1.0)
    first = message.encoded()
    assert message.encoded() is first
    message.status = "read"
    assert json.loads(message.encoded())["status"] == "read"
    assert Message.from_dict(json.loads(message.encoded())).view() == message.view()


def test_the_message_log_is_bounded_and_findable():
    log = MessageLog(maxlen=3)
    messages = [Message(id=f"m{n}", sender="1", to="2", text="", media=None, at=n) for n in range(5)]
    evicted = [log.append(m) for m in messages]
    assert [e.id if e else None for e in evicted] == [None, None, None, "m0", "m1"]
    assert [m.id for m in log] == ["m2", "m3", "m4"]
    assert log.get("m1") is None and log.get("m4") is messages[4]
