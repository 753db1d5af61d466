"""Chat features of the simulated network: presence, read marks, reactions, LID resolution, blocks,
reach-out locks, and the views tests use to check them (`GET /sim/events`, `GET /sim/stats`).

A mixin of `Network` (state.py), which owns the data; kept apart so that each module stays small.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waorch.simulator.accounts import CODE_RESTRICTED, Account, Peer
from waorch.simulator.lids import lid_of, phone_of
from waorch.simulator.logs import EventLog, Message, MessageLog, new_wa_id

if TYPE_CHECKING:
    from waorch.simulator.config import SimConfig

PRESENCE_STATES = ("composing", "paused", "available", "unavailable")
CHAT_STATES = ("composing", "paused")  # these need a person; the others are the account's own
MAX_READ_IDS = 1_000
MAX_EMOJI = 32


class ChatError(Exception):
    """A chat request the network refuses: `code` and a detail for the client."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class ChatFeatures:
    # Provided by Network.
    config: SimConfig
    clock: Callable[[], float]
    accounts: dict[str, Account]
    messages: MessageLog
    inbound_log: MessageLog
    events: EventLog
    second_connections: int
    duplicate_sends: int
    duplicates_delivered: int
    incidents: deque[dict[str, Any]]
    store_info: dict[str, Any]

    if TYPE_CHECKING:
        def next_seq(self) -> int: ...
        def recipient(self, to: Any) -> tuple[str | None, str | None]: ...
        def ban(self, phone: str, reason: str = "manual", code: int | None = None) -> bool: ...
        def _account_of(self, peer: Peer) -> Account | None: ...
        def _touch(self, account: Account) -> None: ...
        def _deliver(self, account: Account, event: dict[str, Any]) -> None: ...
        def _reachout_event(self, account: Account) -> dict[str, Any]: ...
        def _receipt(self, phone: str, wa_id: str, status: str) -> None: ...

    # -- wire ops (raise ChatError) --------------------------------------------------------

    def presence(self, peer: Peer, to: Any, state: Any) -> None:
        """The account shows `state` (to one person for composing/paused); recorded, and passed on
        to a simulated account that is online (presence is never queued)."""
        account = self._logged_in(peer)
        if state not in PRESENCE_STATES:
            raise ChatError("BAD_REQUEST", f"state must be one of {', '.join(PRESENCE_STATES)}")
        person = None
        if to is not None or state in CHAT_STATES:
            person = self._person(to)
        now = self.clock()
        self._record("presence", account.phone, person, now, state=state)
        other = self.accounts.get(person) if person else None
        if other is not None and other.peer is not None and other.peer.logged_in:
            other.peer.send({"ev": "presence", "from": account.phone, "state": state, "at": now})

    def read(self, peer: Peer, chat: Any, ids: Any) -> None:
        """The account read messages the person `chat` sent it; the sender (if simulated) gets a
        read receipt."""
        account = self._logged_in(peer)
        person = self._person(chat)
        if not isinstance(ids, list) or not ids or len(ids) > MAX_READ_IDS \
                or not all(isinstance(i, str) for i in ids):
            raise ChatError("BAD_REQUEST", f"ids must be a list of 1 to {MAX_READ_IDS} message ids")
        found = [self._message(i) for i in ids]
        unknown = [i for i, m in zip(ids, found, strict=True)
                   if m is None or (m.sender, m.to) != (person, account.phone)]
        if unknown:
            raise ChatError("UNKNOWN_MESSAGE", f"not messages from {person} to this account: "
                                               f"{', '.join(unknown[:10])}")
        self._record("read", account.phone, person, self.clock(), ids=list(ids))
        for message in found:
            if message is not None and not message.inbound:  # sent by a simulated account
                self._receipt(message.sender, message.id, "read")

    def react(self, peer: Peer, to: Any, wa_id: Any, emoji: Any) -> tuple[str, float]:
        """A reaction (an empty emoji removes it) to a message of the chat; (reaction id, time)."""
        account = self._logged_in(peer)
        person = self._person(to)
        if not isinstance(emoji, str) or len(emoji) > MAX_EMOJI:
            raise ChatError("BAD_REQUEST", "emoji must be a string ('' removes the reaction)")
        if not isinstance(wa_id, str) or not self.in_chat(account, person, wa_id):
            raise ChatError("UNKNOWN_MESSAGE", "wa_id is not a message of this chat")
        now = self.clock()
        if account.restricted_until and account.restricted_until > now:
            raise ChatError(CODE_RESTRICTED, account.restricted_reason or "restricted")
        reaction_id = new_wa_id()
        self._record("reaction", account.phone, person, now, wa_id=wa_id, emoji=emoji,
                     reaction_id=reaction_id)
        other = self.accounts.get(person)
        if other is not None and other.banned_reason is None and not account.blocked(person):
            self._deliver(other, {"ev": "reaction", "from": account.phone, "wa_id": wa_id, "emoji": emoji,
                                  "reaction_id": reaction_id, "at": now})
        return reaction_id, now

    def resolve_lid(self, phone: str, lid: Any = None, person: Any = None) -> dict[str, Any]:
        """What the device of account `phone` knows: the phone behind `lid`, or the LID of `person`.

        Known only for people it has a conversation with whose phone it has seen (a message to or
        from the phone, or a LID message carrying the phone): otherwise the other side is None.
        """
        account = self.accounts.get(phone)
        if lid is not None:
            behind = phone_of(lid) if isinstance(lid, str) else None
            known = behind is not None and account is not None and account.knows_phone_of(behind)
            return {"lid": lid, "phone": behind if known else None}
        if not isinstance(person, str):
            raise ChatError("BAD_REQUEST", "give lid or phone")
        known = account is not None and account.knows_phone_of(person)
        return {"lid": lid_of(person) if known else None, "phone": person}

    # -- API side ----------------------------------------------------------------------------

    def in_chat(self, account: Account, person: str, wa_id: str) -> bool:
        message = self._message(wa_id)
        return message is not None and message.in_chat(account.phone, person)

    def reachout_lock(self, phone: str, seconds: float | None, reason: str = "reach-out time-lock") \
            -> float | None | bool:
        """Lock new chats for `seconds` (None lifts it); the end time, or False for an unknown account."""
        account = self.accounts.get(phone)
        if account is None:
            return False
        if seconds is None:
            account.reachout_until = account.reachout_reason = None
        else:
            account.reachout_until, account.reachout_reason = self.clock() + seconds, reason
        self._touch(account)
        if account.peer is not None and account.peer.logged_in:  # else told at its next login
            account.peer.send(self._reachout_event(account))
        return account.reachout_until

    def block(self, phone: str, by: str, blocked: bool = True) -> dict[str, Any] | None:
        """Person `by` blocks (or unblocks) the account; a block counts for the blocks rule (102)."""
        account = self.accounts.get(phone)
        if account is None:
            return None
        now = self.clock()
        ban = None
        if blocked:
            account.blocked_by = account.blocked_by or {}
            account.blocked_by[by] = now
            ban = account.activity.on_block(by, now, self.config.ban_thresholds)
        elif account.blocked_by:
            account.blocked_by.pop(by, None)
        self._touch(account)
        if ban is not None and account.banned_reason is None:
            self.ban(phone, ban.reason, ban.code)
        return {"phone": phone, "by": by, "blocked": blocked, "blocked_by": len(account.blocked_by or ()),
                "blocks_today": account.activity.blocks_today(now), "state": account.state,
                "banned_code": account.banned_code}

    def conversations(self, phone: str) -> list[dict[str, Any]] | None:
        account = self.accounts.get(phone)
        if account is None:
            return None
        return [{"person": p, "since": t, "phone_known": account.knows_phone_of(p)}
                for p, t in account.conversations.items()]

    def chat_events(self, account: str | None = None, person: str | None = None) -> list[dict[str, Any]]:
        """Presence, read and reaction events with the messages of the same chats, in network order."""
        found = self.events.select(account, person)

        def add(message: Message, kind: str, acting: str, other: str) -> None:
            found.append({"seq": message.seq, "type": kind, "account": acting, "person": other,
                          "at": message.at, "wa_id": message.id, "text": message.text,
                          "reply_to": message.reply_to, "media": message.media})

        def matches(acting: str, other: str) -> bool:
            return (not account or acting == account) and (not person or other == person)

        for message in self.messages:
            if matches(message.sender, message.to):
                add(message, "message", message.sender, message.to)
            elif account and matches(message.to, message.sender):  # between two simulated accounts
                add(message, "inbound", message.to, message.sender)
        for message in self.inbound_log:
            if matches(message.to, message.sender):
                add(message, "inbound", message.to, message.sender)
        found.sort(key=lambda e: e["seq"])
        return found

    def stats(self) -> dict[str, Any]:
        accounts = self.accounts.values()
        states = Counter(a.state for a in accounts)
        bans = Counter(str(a.banned_code) if a.banned_code is not None else "other"
                       for a in self.accounts.values() if a.banned_reason is not None)
        return {
            "accounts": len(self.accounts), "states": dict(states),
            "sent": sum(a.sent for a in self.accounts.values()),
            "received": sum(a.received for a in self.accounts.values()),
            "messages_logged": len(self.messages), "inbound_logged": len(self.inbound_log),
            "second_connections": self.second_connections, "duplicate_sends": self.duplicate_sends,
            "duplicates_delivered": self.duplicates_delivered,
            "accounts_with_second_connections": sum(1 for a in accounts if a.second_connections),
            "accounts_with_duplicates_delivered": sum(1 for a in accounts if a.duplicates_delivered),
            "bans": dict(bans), "incidents": list(self.incidents)[-100:], "store": dict(self.store_info),
        }

    # -- helpers -----------------------------------------------------------------------------

    def _logged_in(self, peer: Peer) -> Account:
        account = self._account_of(peer)
        if account is None or not peer.logged_in:
            raise ChatError("NOT_CONNECTED", "log in first")
        return account

    def _person(self, to: Any) -> str:
        person, _ = self.recipient(to)
        if person is None:
            raise ChatError("INVALID_RECIPIENT", "must be E.164 digits or a known <digits>@lid")
        return person

    def _message(self, wa_id: str) -> Message | None:
        return self.messages.get(wa_id) or self.inbound_log.get(wa_id)

    def _record(self, kind: str, account: str, person: str | None, at: float, **details: Any) -> None:
        self.events.add({"seq": self.next_seq(), "type": kind, "account": account, "person": person,
                         "at": at, **details})
