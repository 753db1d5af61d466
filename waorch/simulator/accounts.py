"""What the simulated network knows about one account, and how it is saved.

Slotted and lazily filled: a fleet of 10,000 idle accounts should cost a few MB, not a few hundred.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from waorch.simulator.ban_model import AccountActivity
from waorch.simulator.lids import lid_of

CODE_RESTRICTED = "463"  # what WhatsApp answers a send from a restricted account
MAX_PENDING = 1_000  # events kept for an offline account
MAX_CONVERSATIONS = 50_000  # people remembered per account; the oldest first contact goes first


class Peer(Protocol):
    """One wire connection as the network sees it."""

    source_address: str
    phone: str | None
    session: str | None
    logged_in: bool
    last_seen: float  # time.monotonic() of the last request from the client

    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


# Fields saved as they are (JSON-friendly); the rest is rebuilt or converted in to_dict/from_dict.
_PLAIN = ("creds", "session", "device", "banned_reason", "banned_code", "banned_at", "restricted_until",
          "restricted_reason", "reachout_until", "reachout_reason", "sent", "received",
          "second_connections", "duplicate_sends", "duplicates_delivered")


@dataclass(slots=True, eq=False)
class Account:
    phone: str
    creds: str | None = None
    session: str | None = None
    device: dict[str, Any] = field(default_factory=dict)
    peer: Peer | None = None
    qr_code: str | None = None
    qr_timer: asyncio.TimerHandle | None = None
    scan_timer: asyncio.TimerHandle | None = None
    banned_reason: str | None = None
    banned_code: int | None = None
    banned_at: float | None = None
    restricted_until: float | None = None  # full restriction: every send fails with 463
    restricted_reason: str | None = None
    reachout_until: float | None = None  # reach-out lock: sends to new people fail with 463
    reachout_reason: str | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # events for when it logs in
    activity: AccountActivity = field(default_factory=AccountActivity)
    conversations: dict[str, float] = field(default_factory=dict)  # person phone -> since
    lid_only: set[str] | None = None  # people it talks to whose phone its device does not know
    blocked_by: dict[str, float] | None = None  # person phone -> when they blocked it
    sent: int = 0
    received: int = 0
    second_connections: int = 0  # hellos that found a live connection (the old one was replaced)
    duplicate_sends: int = 0  # sends of a client message id the network had already accepted
    duplicates_delivered: int = 0  # ... of which reached the person again (through this account)
    encoded: bytes | None = None  # cached JSON for the state file; None when changed since

    @property
    def lid(self) -> str:
        return lid_of(self.phone)

    @property
    def state(self) -> str:
        if self.banned_reason is not None:
            return "banned"
        if self.peer is not None:
            return "connected" if self.peer.logged_in else "waiting_qr"
        return "paired" if self.creds else "unpaired"

    def has_conversation(self, person: str) -> bool:
        return person in self.conversations

    def knows_phone_of(self, person: str) -> bool:
        """Whether its device can map the person's LID to the phone (as a LID map would)."""
        return person in self.conversations and not (self.lid_only and person in self.lid_only)

    def converse(self, person: str, now: float, phone_known: bool = True) -> None:
        """Record a conversation with `person`; `phone_known` False when only their LID was seen."""
        if person not in self.conversations:
            if len(self.conversations) >= MAX_CONVERSATIONS:
                oldest = next(iter(self.conversations))
                del self.conversations[oldest]
                if self.lid_only:
                    self.lid_only.discard(oldest)
            self.conversations[person] = now
            if not phone_known:
                self.lid_only = self.lid_only or set()
                self.lid_only.add(person)
        elif phone_known and self.lid_only:
            self.lid_only.discard(person)

    def blocked(self, person: str) -> bool:
        return bool(self.blocked_by) and person in self.blocked_by

    def queue(self, event: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            del self.pending[0]
        self.pending.append(event)

    def view(self, now: float) -> dict[str, Any]:
        return {
            "phone": self.phone, "lid": self.lid, "state": self.state, "session": self.session,
            "device": self.device, "source_addresses": sorted(self.activity.sources),
            "current_source": self.peer.source_address if self.peer else None,
            "banned_reason": self.banned_reason, "banned_code": self.banned_code, "banned_at": self.banned_at,
            "restricted_until": self.restricted_until, "restricted_reason": self.restricted_reason,
            "reachout_until": self.reachout_until, "reachout_reason": self.reachout_reason,
            "sent": self.sent, "received": self.received, "pending_events": len(self.pending),
            "conversations": len(self.conversations), "blocked_by": len(self.blocked_by or ()),
            "blocks_today": self.activity.blocks_today(now),
            "second_connections": self.second_connections, "duplicate_sends": self.duplicate_sends,
            "duplicates_delivered": self.duplicates_delivered,
        }

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _PLAIN}
        data.update(phone=self.phone, pending=self.pending, activity=self.activity.to_dict(),
                    conversations=self.conversations, lid_only=sorted(self.lid_only or ()),
                    blocked_by=self.blocked_by or {})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        account = cls(phone=str(data["phone"]))
        for name in _PLAIN:
            if name in data:
                setattr(account, name, data[name])
        account.pending = list(data.get("pending") or [])[-MAX_PENDING:]
        account.activity = AccountActivity.from_dict(data.get("activity") or {})
        account.conversations = {str(p): float(t) for p, t in (data.get("conversations") or {}).items()}
        account.lid_only = set(data.get("lid_only") or ()) or None
        account.blocked_by = {str(p): float(t) for p, t in (data.get("blocked_by") or {}).items()} or None
        return account
