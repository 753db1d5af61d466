"""The simulator's account-safety behaviour over real HTTP and the real wire (through SOCKS5):
conversations, reach-out locks, LIDs, blocks, the 101/102/104 ban rules, presence, read marks,
reactions, replies and media."""

from __future__ import annotations

import pytest

from tests.support.sim_support import ALICE, BOB, CAROL, DAVE, account, api, online, send
from waorch.simulator import BanThresholds

JPEG = {"kind": "image", "mimetype": "image/jpeg", "size": 52_000, "filename": "a.jpg", "sha256": "ab" * 32}


def inbound(sim, sender: str, to: str, text: str = "hello", **fields) -> dict:
    response = api(sim, "POST", "/sim/inbound", json={"from": sender, "to": to, "text": text, **fields})
    assert response.status_code == 202, response.text
    return response.json()


def people_of(sim, phone: str) -> dict[str, bool]:
    response = api(sim, "GET", f"/sim/accounts/{phone}/conversations")
    assert response.status_code == 200
    return {c["person"]: c["phone_known"] for c in response.json()}


def test_conversations_start_with_an_inbound_or_a_delivered_message(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    assert people_of(sim, ALICE) == {}
    inbound(sim, CAROL, ALICE, "hi there")
    alice.expect("message")
    wa_id = send(alice, "1", DAVE, "hello dave")["wa_id"]
    alice.expect("receipt", wa_id=wa_id, status="delivered")
    assert people_of(sim, ALICE) == {CAROL: True, DAVE: True}
    assert account(sim, ALICE)["conversations"] == 2
    assert api(sim, "GET", f"/sim/accounts/{BOB}/conversations").status_code == 404


def test_reachout_lock_refuses_only_new_chats(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    inbound(sim, CAROL, ALICE)
    alice.expect("message")
    locked = api(sim, "POST", f"/sim/accounts/{ALICE}/reachout-lock",
                 json={"seconds": 600, "reason": "new chats capped"})
    until = locked.json()["until"]
    assert locked.status_code == 200
    assert alice.expect("reachout_lock") == {"ev": "reachout_lock", "reason": "new chats capped",
                                             "until": until}

    stranger = send(alice, "new", DAVE)
    assert (stranger["ok"], stranger["code"], stranger["retryable"], stranger["restricted_until"],
            stranger["scope"]) == (False, "463", True, until, "new_chats")
    assert send(alice, "known", CAROL, "reply inside the conversation")["ok"] is True
    assert account(sim, ALICE)["reachout_until"] == until
    assert [m["to"] for m in api(sim, "GET", "/sim/messages").json()] == [CAROL]

    # told again at the next login, and lifted by DELETE
    api(sim, "POST", f"/sim/accounts/{ALICE}/disconnect")
    alice.expect_closed()
    again = online(clients, proxies[0], sim, ALICE, "s2")  # a new pairing logs in the same account
    assert again.expect("reachout_lock")["until"] == until
    assert api(sim, "DELETE", f"/sim/accounts/{ALICE}/reachout-lock").json()["until"] is None
    assert again.expect("reachout_lock")["until"] is None
    assert send(again, "after", DAVE)["ok"] is True

    # the full restriction still stops everything, conversations included
    api(sim, "POST", f"/sim/accounts/{ALICE}/restrict", json={"seconds": 60})
    full = send(again, "full", CAROL)
    assert (full["code"], full["scope"]) == ("463", "all")
    assert api(sim, "POST", f"/sim/accounts/{ALICE}/reachout-lock", json={"seconds": 0}).status_code == 422
    assert api(sim, "POST", f"/sim/accounts/{BOB}/reachout-lock", json={"seconds": 5}).status_code == 404


def test_lid_with_phone_alternative(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    carol_lid = api(sim, "GET", f"/sim/people/{CAROL}").json()["lid"]
    assert carol_lid.endswith("@lid") and CAROL not in carol_lid
    answer = inbound(sim, CAROL, ALICE, "STOP", as_lid=True, with_phone=True)
    assert answer["from"] == answer["lid"] == carol_lid
    event = alice.expect("message", wa_id=answer["wa_id"])
    assert (event["from"], event["sender_alt"], event["text"]) == (carol_lid, CAROL, "STOP")
    # the device learnt the mapping from the alt: the LID resolves
    resolved = api(sim, "GET", f"/sim/lid/{carol_lid}", params={"account": ALICE})
    assert resolved.status_code == 200 and resolved.json()["phone"] == CAROL


def test_lid_resolved_through_the_map_of_an_earlier_conversation(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    wa_id = send(alice, "1", CAROL, "hello")["wa_id"]
    alice.expect("receipt", wa_id=wa_id, status="delivered")
    answer = inbound(sim, CAROL, ALICE, "stop", as_lid=True, with_phone=False)
    event = alice.expect("message", wa_id=answer["wa_id"])
    assert event["from"] == answer["lid"] and "sender_alt" not in event
    alice.request(op="resolve_lid", ref="q", lid=event["from"])
    assert alice.expect("lid", ref="q") == {"ev": "lid", "ref": "q", "ok": True, "lid": event["from"],
                                            "phone": CAROL}
    alice.request(op="resolve_lid", ref="p", phone=CAROL)
    assert alice.expect("lid", ref="p")["lid"] == event["from"]


def test_lid_without_phone_from_a_stranger_is_unresolvable(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    answer = inbound(sim, DAVE, ALICE, "STOP", as_lid=True, with_phone=False)
    lid = alice.expect("message", wa_id=answer["wa_id"])["from"]
    alice.request(op="resolve_lid", ref="q", lid=lid)
    assert alice.expect("lid", ref="q")["phone"] is None
    refused = api(sim, "GET", f"/sim/lid/{lid}", params={"account": ALICE})
    assert refused.status_code == 404 and refused.json()["code"] == "unresolvable"
    # the network still counts it a conversation (the person wrote), with the phone unknown
    assert people_of(sim, ALICE) == {DAVE: False}
    # a reply to the LID reaches the person's number, and still teaches the device no phone
    reply = send(alice, "r", lid, "ok, unsubscribed")
    alice.expect("receipt", wa_id=reply["wa_id"], status="delivered")
    message = api(sim, "GET", "/sim/messages", params={"from": ALICE}).json()[0]
    assert (message["to"], message["to_lid"]) == (DAVE, lid)
    assert api(sim, "GET", f"/sim/lid/{lid}", params={"account": ALICE}).status_code == 404
    assert api(sim, "GET", "/sim/lid/12@lid", params={"account": ALICE}).status_code == 422
    assert api(sim, "GET", f"/sim/lid/{lid}", params={"account": BOB}).status_code == 404


def test_blocks_stop_delivery_and_ban_with_102(make_sim, proxies, clients):
    sim = make_sim(ban_thresholds=BanThresholds(blocks_per_day=1))
    alice = online(clients, proxies[0], sim, ALICE)
    blocked = api(sim, "POST", f"/sim/accounts/{ALICE}/block", json={"by": CAROL})
    assert blocked.json() == {"phone": ALICE, "by": CAROL, "blocked": True, "blocked_by": 1,
                                   "blocks_today": 1, "state": "connected", "banned_code": None}
    # one tick only: accepted, never delivered; a message to someone else is delivered
    to_carol = send(alice, "c", CAROL)["wa_id"]
    to_dave = send(alice, "d", DAVE)["wa_id"]
    alice.expect("receipt", wa_id=to_dave, status="read")
    statuses = {m["id"]: m["status"] for m in api(sim, "GET", "/sim/messages").json()}
    assert statuses == {to_carol: "sent", to_dave: "read"}

    second = api(sim, "POST", f"/sim/accounts/{ALICE}/block", json={"by": DAVE}).json()
    assert (second["state"], second["banned_code"]) == ("banned", 102)
    banned = alice.expect("banned")
    assert banned["code"] == 102 and banned["reason"].startswith("blocked: 2 people")
    assert api(sim, "POST", f"/sim/accounts/{ALICE}/block", json={"by": "x"}).status_code == 422
    assert api(sim, "POST", f"/sim/accounts/{BOB}/block", json={"by": CAROL}).status_code == 404


def test_unblock_lets_messages_through_again(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    api(sim, "POST", f"/sim/accounts/{ALICE}/block", json={"by": CAROL})
    unblocked = api(sim, "POST", f"/sim/accounts/{ALICE}/unblock", json={"by": CAROL}).json()
    assert (unblocked["blocked"], unblocked["blocked_by"], unblocked["blocks_today"]) == (False, 0, 1)
    wa_id = send(alice, "c", CAROL)["wa_id"]
    alice.expect("receipt", wa_id=wa_id, status="delivered")


def test_messages_to_non_contacts_ban_with_101(make_sim, proxies, clients):
    sim = make_sim(ban_thresholds=BanThresholds(non_contacts_per_day=2))
    alice = online(clients, proxies[0], sim, ALICE)
    inbound(sim, BOB, ALICE, "hi")  # a conversation: replies to Bob never count
    for ref in ("b1", "b2", "b3"):
        assert send(alice, ref, BOB)["ok"] is True
    assert send(alice, "c", CAROL)["ok"] is True
    assert send(alice, "d", DAVE)["ok"] is True
    third = send(alice, "e", "15550000005")
    assert (third["ok"], third["code"], third["ban_code"]) == (False, "BANNED", 101)
    assert alice.expect("banned")["code"] == 101
    view = account(sim, ALICE)
    assert (view["state"], view["banned_code"]) == ("banned", 101)
    assert api(sim, "GET", "/sim/stats").json()["bans"] == {"101": 1}


def test_the_same_text_to_many_people_bans_with_104(make_sim, proxies, clients):
    sim = make_sim()
    assert api(sim, "PUT", "/sim/ban-model", json={"same_text_per_day": 2}).status_code == 200
    alice = online(clients, proxies[0], sim, ALICE)
    assert send(alice, "1", BOB, "Big SALE today")["ok"] is True
    assert send(alice, "2", CAROL, "big sale  today")["ok"] is True
    assert send(alice, "3", CAROL, "big sale today")["ok"] is True  # the same person again
    assert send(alice, "4", DAVE, "something else")["ok"] is True
    refused = send(alice, "5", DAVE, "BIG SALE TODAY")
    assert (refused["code"], refused["ban_code"]) == ("BANNED", 104)
    assert alice.expect("banned")["code"] == 104


def test_read_then_typing_then_a_reply_with_media_and_a_reaction(make_sim, proxies, clients):
    sim = make_sim(read_delay=600)  # the only read receipt in time is the one Alice's read op causes
    alice = online(clients, proxies[0], sim, ALICE)
    bob = online(clients, proxies[1], sim, BOB)
    question = send(bob, "q", ALICE, "can you send the photo?")["wa_id"]
    assert alice.expect("message", wa_id=question)["from"] == BOB

    alice.request(op="read", ref="r", chat=BOB, ids=[question])
    assert alice.expect("op_result", ref="r") == {"ev": "op_result", "ref": "r", "op": "read", "ok": True}
    assert bob.expect("receipt", wa_id=question, status="read")
    alice.request(op="presence", ref="t", to=BOB, state="composing")
    assert alice.expect("op_result", ref="t")["ok"] is True
    typing = bob.expect("presence")
    assert (typing["from"], typing["state"]) == (ALICE, "composing")
    answer = send(alice, "a", BOB, "here it is", media=JPEG, reply_to=question)
    assert answer["ok"] is True
    delivered = bob.expect("message", wa_id=answer["wa_id"])
    assert (delivered["reply_to"], delivered["media"], delivered["text"]) == (question, JPEG, "here it is")
    alice.request(op="react", ref="x", to=BOB, wa_id=question, emoji="👍")
    reaction = alice.expect("send_result", ref="x")
    assert reaction["ok"] is True and reaction["wa_id"].startswith("3EB0")
    seen = bob.expect("reaction")
    assert (seen["from"], seen["wa_id"], seen["emoji"], seen["reaction_id"]) == (
        ALICE, question, "👍", reaction["wa_id"])

    events = api(sim, "GET", "/sim/events", params={"account": ALICE, "person": BOB}).json()
    assert [e["type"] for e in events] == ["inbound", "read", "presence", "message", "reaction"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[1]["ids"] == [question] and events[2]["state"] == "composing"
    assert events[3]["wa_id"] == answer["wa_id"] and events[3]["reply_to"] == question
    assert events[3]["at"] >= events[2]["at"] >= events[1]["at"]
    assert api(sim, "GET", "/sim/events", params={"account": CAROL}).json() == []


def test_a_person_can_quote_and_the_account_reads_inbound(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    sent = send(alice, "1", CAROL, "your order shipped")["wa_id"]
    answer = inbound(sim, CAROL, ALICE, "thanks!", reply_to=sent)
    assert alice.expect("message", wa_id=answer["wa_id"])["reply_to"] == sent
    alice.request(op="read", chat=CAROL, ids=[answer["wa_id"]])  # no ref: no answer unless refused
    alice.request(op="presence", ref="p", state="available")
    assert alice.expect("op_result", ref="p")["ok"] is True
    kinds = [(e["type"], e.get("state")) for e in api(sim, "GET", "/sim/events",
                                                      params={"account": ALICE}).json()]
    assert kinds == [("message", None), ("inbound", None), ("read", None), ("presence", "available")]
    stranger = api(sim, "POST", "/sim/inbound",
                   json={"from": DAVE, "to": ALICE, "text": "x", "reply_to": sent})
    assert stranger.status_code == 422 and stranger.json()["code"] == "unknown_quoted"


@pytest.mark.parametrize("fields, code", [
    ({"reply_to": "3EB0DOESNOTEXIST"}, "UNKNOWN_QUOTED"),
    ({"media": {"kind": "sticker"}}, "INVALID_MEDIA"),
    ({"media": {"kind": "ptt", "mimetype": "image/png"}}, "INVALID_MEDIA"),
    ({"media": {"kind": "image", "size": 17 * 1024 * 1024}}, "MEDIA_TOO_LARGE"),
    ({"media": {"kind": "document", "sha256": "xyz"}}, "INVALID_MEDIA"),
    ({"to": "99@lid"}, "INVALID_RECIPIENT"),
])
def test_bad_sends_are_refused_with_a_clear_code(sim, proxies, clients, fields, code):
    alice = online(clients, proxies[0], sim, ALICE)
    result = send(alice, "x", **{"to": BOB, **fields})
    assert (result["ok"], result["code"], result["retryable"]) == (False, code, False)
    assert api(sim, "GET", "/sim/messages").json() == []


def test_media_kinds_are_accepted_and_recorded(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    kinds = {
        "document": {"kind": "document", "mimetype": "application/pdf", "size": 90 * 1024 * 1024,
                     "filename": "invoice.pdf"},
        "video": {"kind": "video", "mimetype": "video/mp4", "size": 1000},
        "audio": {"kind": "audio", "mimetype": "audio/mpeg"},
        "ptt": {"kind": "ptt", "mimetype": "audio/ogg; codecs=opus", "size": 4000},
        "legacy": {"url": "https://example.invalid/a.pdf", "mimetype": "application/pdf"},  # no kind
    }
    for name, media in kinds.items():
        assert send(alice, name, BOB, "", media=media)["ok"] is True, name
    assert [m["media"] for m in api(sim, "GET", "/sim/messages").json()] == list(kinds.values())


def test_bad_chat_ops_are_refused(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    mine = send(alice, "1", BOB, "hello")["wa_id"]
    alice.request(op="read", ref="r", chat=BOB, ids=[mine])  # one's own message is not read this way
    refused = alice.expect("op_result", ref="r")
    assert (refused["ok"], refused["code"]) == (False, "UNKNOWN_MESSAGE")
    alice.request(op="presence", ref="p", to=BOB, state="dancing")
    assert alice.expect("op_result", ref="p")["code"] == "BAD_REQUEST"
    alice.request(op="presence", state="composing")  # composing needs a person; no ref: an error event
    assert alice.expect("error")["code"] == "INVALID_RECIPIENT"
    alice.request(op="react", ref="x", to=CAROL, wa_id=mine, emoji="👍")  # not in the chat with Carol
    assert alice.expect("send_result", ref="x")["code"] == "UNKNOWN_MESSAGE"
    assert [e["type"] for e in api(sim, "GET", "/sim/events").json()] == ["message"]  # nothing else
