"""Turn neonize event objects (protobuf messages) into transport events `(event, data)`.

Pure functions that never import neonize: they read the protobuf fields by name and the enum
names from the message descriptors, so the worker loads the Go library only in the adapter.
"""

from __future__ import annotations

import re
import time
from typing import Any

from worker_container.transports.base import BANNED, CONNECTION_LOST, LOGGED_OUT

Mapped = list[tuple[str, dict[str, Any]]]

STREAM_REPLACED = "STREAM_REPLACED"
CLIENT_OUTDATED = "CLIENT_OUTDATED"
PAIRING_FAILED = "PAIRING_FAILED"

# ConnectFailureReason names (neonize's copy of whatsmeow's 401/402/403/406/405... codes).
_LOGOUT_REASONS = {"LOGGED_OUT", "MAIN_DEVICE_GONE", "UNKNOWN_LOGOUT"}
_BAN_REASONS = {"TEMP_BANNED"}
# whatsmeow's texts for a ban (its TempBanReason strings) and WhatsApp's 403 logout headers.
_BAN_WORDS = re.compile(r"\bban|too many people blocked you|sent too many messages|"
                        r"sent the same message to too many|account.*(disabled|suspended)", re.I)

_RECEIPT_STATUS = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "read"}
_MEDIA_KINDS = ("imageMessage", "videoMessage", "audioMessage", "documentMessage", "stickerMessage")
# Containers WhatsApp wraps a real message in (disappearing, view-once, captioned documents).
_WRAPPERS = ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension",
             "documentWithCaptionMessage")
# Accounts WhatsApp uses for status updates and broadcasts, not a person writing to us.
_NOT_A_PERSON = {"broadcast", "newsletter", "g.us"}


def enum_name(message: Any, field: str) -> str:
    """The enum value name of `message.field` ("" when unset or unknown)."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    value = descriptor.enum_type.values_by_number.get(getattr(message, field))
    return value.name if value is not None else ""


def unix_seconds(value: int | float) -> float:
    """A neonize timestamp as unix seconds (tolerates milliseconds); now when unset."""
    value = float(value or 0)
    if value <= 0:
        return time.time()
    return value / 1000.0 if value > 1e11 else value


def ban_until(expire: int, now: float | None = None) -> float | None:
    """Unix time a temporary ban ends, from TemporaryBan.Expire (a duration, or a timestamp)."""
    now = time.time() if now is None else now
    if not expire or expire <= 0:
        return None
    # whatsmeow gives a time.Duration; neonize's proto carries an integer whose unit is not
    # documented: seconds (< 1e9), a unix timestamp (< 1e10), else Go nanoseconds.
    if expire < 1e9:
        return now + expire
    if expire < 1e10:
        return float(expire)
    return now + expire / 1e9


def phone_of(jid: Any) -> str:
    """The user part of a JID (phone digits for s.whatsapp.net JIDs)."""
    return jid.User if jid is not None else ""


def map_event(ev: Any, own_jid: str = "", now: float | None = None) -> Mapped:
    """The transport events for one neonize event (empty when it means nothing to waorch)."""
    kind = ev.DESCRIPTOR.name
    handler = _HANDLERS.get(kind)
    return handler(ev, own_jid, now) if handler else []


def _connected(ev: Any, own_jid: str, now: float | None) -> Mapped:
    return [("CONNECTED", {"jid": own_jid})]


def _keepalive_restored(ev: Any, own_jid: str, now: float | None) -> Mapped:
    return [("CONNECTED", {"jid": own_jid, "restored": True})]


def _disconnected(ev: Any, own_jid: str, now: float | None) -> Mapped:
    return [("ERROR", {"code": CONNECTION_LOST, "detail": "disconnected from WhatsApp; reconnecting"})]


def _keepalive_timeout(ev: Any, own_jid: str, now: float | None) -> Mapped:
    detail = f"keep-alive timed out ({ev.ErrorCount} missed)"
    return [("ERROR", {"code": CONNECTION_LOST, "detail": detail})]


def _stream_error(ev: Any, own_jid: str, now: float | None) -> Mapped:
    return [("ERROR", {"code": CONNECTION_LOST, "detail": f"stream error {ev.Code or '?'}"})]


def _stream_replaced(ev: Any, own_jid: str, now: float | None) -> Mapped:
    detail = "another client connected with this session's credentials; this one stopped"
    return [("ERROR", {"code": STREAM_REPLACED, "detail": detail})]


def _client_outdated(ev: Any, own_jid: str, now: float | None) -> Mapped:
    detail = "WhatsApp refused this client version: upgrade neonize (the pinned wheel is too old)"
    return [("ERROR", {"code": CLIENT_OUTDATED, "detail": detail})]


def _logged_out(ev: Any, own_jid: str, now: float | None) -> Mapped:
    reason = enum_name(ev, "Reason")
    if reason in _BAN_REASONS:
        return [("ERROR", {"code": BANNED, "detail": f"logged out: {reason}", "until": None})]
    where = " at connect" if ev.OnConnect else ""
    return [("ERROR", {"code": LOGGED_OUT, "detail": f"logged out{where}: {reason or 'unknown reason'}"})]


def _connect_failure(ev: Any, own_jid: str, now: float | None) -> Mapped:
    reason = enum_name(ev, "Reason")
    text = (ev.Message or "").strip()
    detail = f"connect failure {reason or '?'}" + (f": {text}" if text else "")
    if reason in _BAN_REASONS or _BAN_WORDS.search(text):
        return [("ERROR", {"code": BANNED, "detail": detail, "until": None})]
    if reason in _LOGOUT_REASONS:
        return [("ERROR", {"code": LOGGED_OUT, "detail": detail})]
    if reason == "CLIENT_OUTDATED":
        return _client_outdated(ev, own_jid, now)
    return [("ERROR", {"code": CONNECTION_LOST, "detail": detail})]


def _temporary_ban(ev: Any, own_jid: str, now: float | None) -> Mapped:
    reason = enum_name(ev, "Code") or "UNKNOWN"
    until = ban_until(ev.Expire, now)
    return [("ERROR", {"code": BANNED, "detail": f"temporary ban: {reason.lower()}", "until": until})]


def _pair_status(ev: Any, own_jid: str, now: float | None) -> Mapped:
    if enum_name(ev, "Status") != "ERROR":
        return []  # success: CONNECTED follows once the login completes
    return [("ERROR", {"code": PAIRING_FAILED, "detail": f"pairing failed: {ev.Error or 'unknown error'}"})]


def _receipt(ev: Any, own_jid: str, now: float | None) -> Mapped:
    status = _RECEIPT_STATUS.get(enum_name(ev, "Type"))
    source = ev.MessageSource
    if status is None or source.IsFromMe or source.IsGroup:
        return []
    at = unix_seconds(ev.Timestamp)
    by = phone_of(source.Sender) or phone_of(source.Chat)
    return [("MESSAGE_STATUS", {"wa_id": wa_id, "status": status, "at": at, "by": by})
            for wa_id in ev.MessageIDs]


def _message(ev: Any, own_jid: str, now: float | None) -> Mapped:
    info = ev.Info
    source = info.MessageSource
    if source.IsFromMe or source.IsGroup or source.Chat.Server in _NOT_A_PERSON:
        return []
    text, media = message_content(ev.Message)
    if not text and media is None:
        return []  # reactions, revokes, receipts of protocol messages: nothing a person wrote
    sender = source.Sender
    # A LID sender hides the number; whatsmeow puts the phone JID in SenderAlt when it knows it.
    if sender.Server == "lid" and source.SenderAlt.User:
        sender = source.SenderAlt
    return [("INBOUND", {
        "from": sender.User,
        "from_server": sender.Server,
        "text": text,
        "wa_id": info.ID,
        "at": unix_seconds(info.Timestamp),
        "push_name": info.Pushname,
        "media": media,
    })]


def message_content(message: Any) -> tuple[str, dict[str, Any] | None]:
    """(text, media metadata or None) of a waE2E.Message, unwrapping WhatsApp's containers."""
    for _ in range(4):  # containers nest at most a few levels
        inner = next((getattr(message, w).message for w in _WRAPPERS if message.HasField(w)), None)
        if inner is None:
            break
        message = inner
    if message.conversation:
        return message.conversation, None
    if message.HasField("extendedTextMessage"):
        return message.extendedTextMessage.text, None
    for kind in _MEDIA_KINDS:
        if message.HasField(kind):
            part = getattr(message, kind)
            media = {
                "type": kind.removesuffix("Message"),
                "mimetype": part.mimetype,
                "size": int(part.fileLength),
                "sha256": part.fileSHA256.hex(),
            }
            if kind == "documentMessage":
                media["filename"] = part.fileName
            if kind in ("videoMessage", "audioMessage"):
                media["seconds"] = int(part.seconds)
            caption = getattr(part, "caption", "") if kind != "audioMessage" else ""
            return caption, media
    return "", None


_HANDLERS = {
    "Connected": _connected,
    "KeepAliveRestored": _keepalive_restored,
    "Disconnected": _disconnected,
    "KeepAliveTimeout": _keepalive_timeout,
    "StreamError": _stream_error,
    "StreamReplaced": _stream_replaced,
    "ClientOutdated": _client_outdated,
    "LoggedOut": _logged_out,
    "ConnectFailure": _connect_failure,
    "TemporaryBan": _temporary_ban,
    "PairStatus": _pair_status,
    "Receipt": _receipt,
    "Message": _message,
}

# neonize event classes the adapter subscribes to, by their names in neonize.events.
SUBSCRIBED_EVENTS = ("ConnectedEv", "KeepAliveRestoredEv", "DisconnectedEv", "KeepAliveTimeoutEv",
                     "StreamErrorEv", "StreamReplacedEv", "ClientOutdatedEv", "LoggedOutEv",
                     "ConnectFailureEv", "TemporaryBanEv", "ReceiptEv", "MessageEv", "PairStatusEv")
