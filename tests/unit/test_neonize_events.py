"""neonize event → transport event mapping, fed with real neonize protobuf objects built offline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker_container.transports.neonize_events import (
    CLIENT_OUTDATED,
    PAIRING_FAILED,
    STREAM_REPLACED,
    SUBSCRIBED_EVENTS,
    ban_until,
    map_event,
    message_content,
    unix_seconds,
)

pb = pytest.importorskip("neonize.proto.Neonize_pb2")
from neonize import events as nz_events  # noqa: E402
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e  # noqa: E402

NOW = 1_800_000_000.0


def jid(user: str, server: str = "s.whatsapp.net") -> pb.JID:
    return pb.JID(User=user, Server=server, RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def inbound(message: e2e.Message, sender: pb.JID | None = None, **source: object) -> pb.Message:
    sender = sender or jid("4915100000001")
    src = pb.MessageSource(Chat=source.pop("chat", sender), Sender=sender,
                           IsFromMe=source.pop("from_me", False), IsGroup=source.pop("group", False),
                           **source)
    info = pb.MessageInfo(ID="3EB0INBOUND", Timestamp=1_700_000_123, Pushname="Ann", MessageSource=src)
    return pb.Message(Info=info, Message=message)


def test_every_subscribed_event_type_exists_in_neonize() -> None:
    for name in SUBSCRIBED_EVENTS:
        assert getattr(nz_events, name) in nz_events.EVENT_TO_INT


def test_connected_and_restored() -> None:
    assert map_event(pb.Connected(status=True), own_jid="4915112345678") == [
        ("CONNECTED", {"jid": "4915112345678"})]
    assert map_event(pb.KeepAliveRestored(), "49151") == [("CONNECTED", {"jid": "49151", "restored": True})]


def test_disconnect_and_keepalive_timeout_are_connection_lost() -> None:
    [(event, data)] = map_event(pb.Disconnected(status=True))
    assert (event, data["code"]) == ("ERROR", "CONNECTION_LOST")
    [(event, data)] = map_event(pb.KeepAliveTimeout(ErrorCount=3, LastSuccess=5))
    assert (event, data["code"]) == ("ERROR", "CONNECTION_LOST") and "3 missed" in data["detail"]


def test_logged_out() -> None:
    [(event, data)] = map_event(pb.LoggedOut(OnConnect=True, Reason=pb.LOGGED_OUT))
    assert (event, data["code"]) == ("ERROR", "LOGGED_OUT")
    assert "at connect" in data["detail"] and "LOGGED_OUT" in data["detail"]


def test_logged_out_for_a_ban_reason_is_banned() -> None:
    [(_, data)] = map_event(pb.LoggedOut(OnConnect=True, Reason=pb.TEMP_BANNED))
    assert data["code"] == "BANNED"


@pytest.mark.parametrize("reason, message, code", [
    (pb.TEMP_BANNED, "", "BANNED"),
    (pb.LOGGED_OUT, "", "LOGGED_OUT"),
    (pb.MAIN_DEVICE_GONE, "", "LOGGED_OUT"),
    (pb.MAIN_DEVICE_GONE, "Your account has been banned", "BANNED"),
    (pb.UNKNOWN_LOGOUT, "", "LOGGED_OUT"),
    (pb.GENERIC, "you sent the same message to too many people", "BANNED"),
    (pb.CLIENT_OUTDATED, "", CLIENT_OUTDATED),
    (pb.SERVICE_UNAVAILABLE, "", "CONNECTION_LOST"),
    (pb.INTERNAL_SERVER_ERROR, "", "CONNECTION_LOST"),
])
def test_connect_failure(reason: int, message: str, code: str) -> None:
    [(event, data)] = map_event(pb.ConnectFailure(Reason=reason, Message=message))
    assert (event, data["code"]) == ("ERROR", code)


def test_temporary_ban_carries_until() -> None:
    ban = pb.TemporaryBan(Code=pb.TemporaryBan.SEND_TO_TOO_MANY_PEOPLE, Expire=3600)
    [(event, data)] = map_event(ban, now=NOW)
    assert (event, data["code"], data["until"]) == ("ERROR", "BANNED", NOW + 3600)
    assert "send_to_too_many_people" in data["detail"]


def test_ban_until_units() -> None:
    assert ban_until(0, NOW) is None
    assert ban_until(7200, NOW) == NOW + 7200  # seconds
    assert ban_until(1_900_000_000, NOW) == 1_900_000_000  # unix time
    assert ban_until(3600 * 10**9, NOW) == NOW + 3600  # Go time.Duration (ns)


def test_stream_replaced_client_outdated_stream_error() -> None:
    assert map_event(pb.StreamReplaced())[0][1]["code"] == STREAM_REPLACED
    assert map_event(pb.ClientOutdated())[0][1]["code"] == CLIENT_OUTDATED
    [(_, data)] = map_event(pb.StreamError(Code="515"))
    assert data["code"] == "CONNECTION_LOST" and "515" in data["detail"]


def test_pair_status() -> None:
    assert map_event(pb.PairStatus(Status=pb.PairStatus.SUCCESS)) == []
    [(_, data)] = map_event(pb.PairStatus(Status=pb.PairStatus.ERROR, Error="bad code"))
    assert data == {"code": PAIRING_FAILED, "detail": "pairing failed: bad code"}


@pytest.mark.parametrize("rtype, status", [
    (pb.Receipt.DELIVERED, "delivered"),
    (pb.Receipt.READ, "read"),
    (pb.Receipt.PLAYED, "read"),
])
def test_receipts_become_message_status(rtype: int, status: str) -> None:
    src = pb.MessageSource(Chat=jid("4915100000002"), Sender=jid("4915100000002"), IsFromMe=False)
    receipt = pb.Receipt(MessageSource=src, MessageIDs=["3EB0A", "3EB0B"], Timestamp=1_700_000_000,
                         Type=rtype)
    assert map_event(receipt) == [
        ("MESSAGE_STATUS", {"wa_id": wa_id, "status": status, "at": 1_700_000_000.0, "by": "4915100000002"})
        for wa_id in ("3EB0A", "3EB0B")
    ]


@pytest.mark.parametrize("rtype", [pb.Receipt.READ_SELF, pb.Receipt.RETRY, pb.Receipt.SENDER,
                                   pb.Receipt.SERVER_ERROR, pb.Receipt.INACTIVE])
def test_other_receipts_are_ignored(rtype: int) -> None:
    src = pb.MessageSource(Chat=jid("49151"), Sender=jid("49151"))
    assert map_event(pb.Receipt(MessageSource=src, MessageIDs=["x"], Type=rtype)) == []


def test_receipts_from_own_devices_or_groups_are_ignored() -> None:
    mine = pb.MessageSource(Chat=jid("49151"), Sender=jid("49151"), IsFromMe=True)
    group = pb.MessageSource(Chat=jid("123-456", "g.us"), Sender=jid("49151"), IsGroup=True)
    for src in (mine, group):
        assert map_event(pb.Receipt(MessageSource=src, MessageIDs=["x"], Type=pb.Receipt.READ)) == []


def test_inbound_text() -> None:
    [(event, data)] = map_event(inbound(e2e.Message(conversation="STOP")))
    assert event == "INBOUND"
    assert data == {"from": "4915100000001", "from_server": "s.whatsapp.net", "text": "STOP",
                    "wa_id": "3EB0INBOUND", "at": 1_700_000_123.0, "push_name": "Ann", "media": None}


def test_inbound_extended_text_inside_an_ephemeral_wrapper() -> None:
    msg = e2e.Message(ephemeralMessage=e2e.FutureProofMessage(
        message=e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(text="hello https://x.example"))))
    [(_, data)] = map_event(inbound(msg))
    assert data["text"] == "hello https://x.example" and data["media"] is None


def test_inbound_image_metadata_without_download() -> None:
    msg = e2e.Message(imageMessage=e2e.ImageMessage(caption="look", mimetype="image/jpeg", fileLength=2048,
                                                   fileSHA256=b"\x01\x02"))
    [(_, data)] = map_event(inbound(msg))
    assert data["text"] == "look"
    assert data["media"] == {"type": "image", "mimetype": "image/jpeg", "size": 2048, "sha256": "0102"}


def test_inbound_document_with_caption_and_audio() -> None:
    doc = e2e.Message(documentWithCaptionMessage=e2e.FutureProofMessage(message=e2e.Message(
        documentMessage=e2e.DocumentMessage(fileName="a.pdf", mimetype="application/pdf", caption="inv"))))
    text, media = message_content(doc)
    assert text == "inv" and media["type"] == "document" and media["filename"] == "a.pdf"
    text, media = message_content(e2e.Message(audioMessage=e2e.AudioMessage(seconds=7, mimetype="audio/ogg")))
    assert text == "" and media["type"] == "audio" and media["seconds"] == 7


def test_inbound_from_a_lid_uses_the_phone_jid_when_known() -> None:
    [(_, data)] = map_event(inbound(e2e.Message(conversation="hi"), sender=jid("123456789", "lid"),
                                    SenderAlt=jid("4915100000009")))
    assert data["from"] == "4915100000009" and data["from_server"] == "s.whatsapp.net"
    [(_, data)] = map_event(inbound(e2e.Message(conversation="hi"), sender=jid("123456789", "lid")))
    assert data["from"] == "123456789" and data["from_server"] == "lid"


def test_messages_that_are_not_a_person_writing_are_ignored() -> None:
    text = e2e.Message(conversation="hi")
    assert map_event(inbound(text, from_me=True)) == []
    assert map_event(inbound(text, group=True, chat=jid("1-2", "g.us"))) == []
    assert map_event(inbound(text, chat=jid("status", "broadcast"))) == []
    reaction = e2e.Message(reactionMessage=e2e.ReactionMessage(text="👍"))
    assert map_event(inbound(reaction)) == []


def test_unknown_events_map_to_nothing() -> None:
    assert map_event(pb.HistorySync()) == []
    assert map_event(pb.Presence()) == []


def test_unix_seconds() -> None:
    assert unix_seconds(1_700_000_000) == 1_700_000_000
    assert unix_seconds(1_700_000_000_123) == pytest.approx(1_700_000_000.123)
    assert abs(unix_seconds(0) - __import__("time").time()) < 5


def test_mapping_module_does_not_load_neonize() -> None:
    code = ("import sys; import worker_container.transports.neonize_events, "
            "worker_container.transports.neonize_adapter; print('neonize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
