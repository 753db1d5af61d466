"""The network's bounded logs: messages sent by sessions, messages from people, and chat events
(presence, read, reactions) in the order they happened."""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_MESSAGES = 100_000  # each log is for tests and demos, not an archive
MAX_EVENTS = 100_000


def new_wa_id() -> str:
    return "3EB0" + secrets.token_hex(8).upper()


@dataclass(slots=True, eq=False)
class Message:
    """One message on the network: sent by a session (`inbound` False) or written by a person."""

    id: str
    sender: str  # phone digits (a person writing as a LID is still their phone here)
    to: str
    text: str
    media: dict[str, Any] | None
    at: float
    seq: int = 0  # position among all messages and chat events, for ordering checks
    inbound: bool = False
    source_address: str | None = None
    session: str | None = None
    status: str = "sent"
    client_id: str | None = None
    reply_to: str | None = None
    to_lid: str | None = None  # the send addressed the person by LID
    from_lid: str | None = None  # the person wrote as their LID ...
    sender_alt: bool = False  # ... and the event carried their phone as well
    _encoded: bytes | None = None
    _encoded_status: str | None = None

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"id": self.id, "from": self.sender, "to": self.to, "text": self.text,
                                "media": self.media, "at": self.at, "seq": self.seq,
                                "reply_to": self.reply_to}
        if self.inbound:
            view.update(from_lid=self.from_lid, sender_alt=self.sender_alt)
        else:
            view.update(source_address=self.source_address, session=self.session, status=self.status,
                        client_id=self.client_id, to_lid=self.to_lid)
        return view

    def in_chat(self, account: str, person: str) -> bool:
        """Whether this message belongs to the chat between `account` and `person`."""
        return (self.sender, self.to) in ((account, person), (person, account))

    def encoded(self) -> bytes:
        """This message as saved in the state file; encoded again only when its status moved."""
        if self._encoded is None or self._encoded_status != self.status:
            data = {name: getattr(self, name) for name in _SAVED}
            self._encoded = json.dumps(data, separators=(",", ":")).encode()
            self._encoded_status = self.status
        return self._encoded

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(**{name: data[name] for name in _SAVED if name in data})


_SAVED = tuple(name for name in Message.__dataclass_fields__ if not name.startswith("_"))


class MessageLog:
    """The last `maxlen` messages, findable by id."""

    def __init__(self, maxlen: int = MAX_MESSAGES) -> None:
        self.maxlen = maxlen
        self._entries: deque[Message] = deque()
        self._by_id: dict[str, Message] = {}

    def append(self, message: Message) -> Message | None:
        """Add one; returns the message that fell out of the log, if one did."""
        evicted = None
        if len(self._entries) >= self.maxlen:
            evicted = self._entries.popleft()
            self._by_id.pop(evicted.id, None)
        self._entries.append(message)
        self._by_id[message.id] = message
        return evicted

    def get(self, wa_id: str) -> Message | None:
        return self._by_id.get(wa_id)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class EventLog:
    """Chat events (presence, read, reaction) and message markers, each with the network's `seq`."""

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def add(self, event: dict[str, Any]) -> None:
        self._entries.append(event)

    def select(self, account: str | None = None, person: str | None = None) -> list[dict[str, Any]]:
        return [dict(e) for e in self._entries
                if (not account or e["account"] == account) and (not person or e["person"] == person)]
