"""The simulated network's memory: accounts, their connections, messages; and what happens on events.

Everything here runs on the simulator's event loop thread; connections are reached through the
small `Peer` interface so that the wire server owns all socket handling.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from waorch.simulator.ban_model import AccountActivity, BanThresholds

PHONE = re.compile(r"^[1-9]\d{6,14}$")
MAX_MESSAGES = 100_000  # the message log is for tests and demos, not an archive
MAX_PENDING = 1_000  # events kept for an offline account
MAX_CLIENT_IDS = 10_000  # recent client message ids per account, for resends after a lost answer
CODE_RESTRICTED = "463"


class Peer(Protocol):
    """One wire connection as the network sees it."""

    source_address: str
    phone: str | None
    session: str | None
    logged_in: bool

    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class SimConfig:
    receipt_delay: float = 0.2  # send → delivered
    read_delay: float = 1.0  # delivered → read
    qr_interval: float = 20.0  # a fresh QR code this often while unpaired
    demo_scan_after: float | None = None  # scan waiting sessions by itself after this long
    ban_thresholds: BanThresholds = field(default_factory=BanThresholds)


@dataclass
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
    banned_at: float | None = None
    restricted_until: float | None = None
    restricted_reason: str | None = None
    pending: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_PENDING))
    activity: AccountActivity = field(default_factory=AccountActivity)
    sent_ids: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    sent: int = 0
    received: int = 0

    @property
    def state(self) -> str:
        if self.banned_reason is not None:
            return "banned"
        if self.peer is not None:
            return "connected" if self.peer.logged_in else "waiting_qr"
        return "paired" if self.creds else "unpaired"

    def view(self) -> dict[str, Any]:
        return {
            "phone": self.phone, "state": self.state, "session": self.session,
            "device": self.device, "source_addresses": sorted(self.activity.sources),
            "current_source": self.peer.source_address if self.peer else None,
            "banned_reason": self.banned_reason, "banned_at": self.banned_at,
            "restricted_until": self.restricted_until, "restricted_reason": self.restricted_reason,
            "sent": self.sent, "received": self.received, "pending_events": len(self.pending),
        }


def new_wa_id() -> str:
    return "3EB0" + secrets.token_hex(8).upper()


class Network:
    """All accounts and messages of one simulator run."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.messages: deque[dict[str, Any]] = deque(maxlen=MAX_MESSAGES)
        self.inbound_log: deque[dict[str, Any]] = deque(maxlen=MAX_MESSAGES)
        self._by_wa_id: dict[str, dict[str, Any]] = {}

    # -- wire side -------------------------------------------------------------------------

    def hello(self, peer: Peer, phone: str, session: str, device: dict[str, Any],
              creds: str | None) -> None:
        account = self.accounts.setdefault(phone, Account(phone=phone))
        peer.phone, peer.session = phone, session
        if account.peer is not None and account.peer is not peer:
            old, account.peer = account.peer, None
            self._cancel_timers(account)
            old.send({"ev": "replaced"})
            old.close()
        if account.banned_reason is not None:
            peer.send({"ev": "banned", "reason": account.banned_reason})
            peer.close()
            return
        account.session, account.device = session, device
        reason = account.activity.on_source(peer.source_address, self.clock(),
                                            self.config.ban_thresholds)
        if reason is not None:
            account.peer = peer
            self.ban(phone, reason)
            return
        if creds is not None:
            if account.creds is None or not secrets.compare_digest(creds, account.creds):
                peer.send({"ev": "logged_out", "reason": "unknown credentials"})
                peer.close()
                return
            account.peer = peer
            peer.logged_in = True
            peer.send({"ev": "connected", "jid": f"{phone}@s.whatsapp.net"})
            if account.restricted_until and account.restricted_until > self.clock():
                peer.send(self._restricted_event(account))
            while account.pending:
                peer.send(account.pending.popleft())
            return
        account.peer = peer
        self._send_qr(account)
        if self.config.demo_scan_after is not None:
            loop = asyncio.get_running_loop()
            account.scan_timer = loop.call_later(self.config.demo_scan_after, self._demo_scan, account, peer)

    def gone(self, peer: Peer) -> None:
        """A connection closed (either side)."""
        account = self._account_of(peer)
        if account is not None:
            account.peer = None
            self._cancel_timers(account)

    def send(self, peer: Peer, ref: Any, to: str, text: str, media: Any, client_id: Any = None) -> None:
        """A send request; `client_id` (the client's message id) makes a resend return the first result."""
        account = self._account_of(peer)

        def fail(code: str, detail: str, retryable: bool, **extra: Any) -> None:
            peer.send({"ev": "send_result", "ref": ref, "ok": False, "code": code, "detail": detail,
                       "retryable": retryable, **extra})

        if account is None or not peer.logged_in:
            return fail("NOT_CONNECTED", "log in first", True)
        if isinstance(client_id, str) and client_id in account.sent_ids:
            first = account.sent_ids[client_id]
            peer.send({"ev": "send_result", "ref": ref, "ok": True, "wa_id": first["id"], "ts": first["at"],
                       "duplicate": True})
            return None
        if not isinstance(to, str) or not PHONE.match(to):
            return fail("INVALID_RECIPIENT", "recipient must be E.164 digits", False)
        if not (isinstance(text, str) and text) and not isinstance(media, dict):
            return fail("EMPTY_MESSAGE", "text or media required", False)
        now = self.clock()
        if account.restricted_until and account.restricted_until > now:
            return fail(CODE_RESTRICTED, account.restricted_reason or "reach-out time-lock", True,
                        restricted_until=account.restricted_until)
        reason = account.activity.on_send(now, self.config.ban_thresholds)
        if reason is not None:
            fail("BANNED", reason, True)  # not sent: another account may still send it
            self.ban(account.phone, reason)
            return None
        wa_id = new_wa_id()
        record = {"id": wa_id, "from": account.phone, "to": to, "text": text if isinstance(text, str) else "",
                  "media": media if isinstance(media, dict) else None, "at": now,
                  "source_address": peer.source_address, "session": peer.session, "status": "sent"}
        self._remember(record)
        account.sent += 1
        if isinstance(client_id, str):
            account.sent_ids[client_id] = record
            if len(account.sent_ids) > MAX_CLIENT_IDS:
                account.sent_ids.popitem(last=False)
        peer.send({"ev": "send_result", "ref": ref, "ok": True, "wa_id": wa_id, "ts": now})
        recipient = self.accounts.get(to)
        if recipient is not None and recipient.banned_reason is not None:
            return None  # a banned number never confirms delivery
        if recipient is not None:
            recipient.received += 1
            self._deliver(recipient, {"ev": "message", "from": account.phone, "text": record["text"],
                                      "wa_id": wa_id, "at": now, "media": record["media"]})
        loop = asyncio.get_running_loop()
        delivered = self.config.receipt_delay
        loop.call_later(delivered, self._receipt, account.phone, wa_id, "delivered")
        loop.call_later(delivered + self.config.read_delay, self._receipt, account.phone, wa_id, "read")
        return None

    # -- API side --------------------------------------------------------------------------

    def scan(self, phone: str, code: str | None = None) -> bool:
        """Pair the session waiting with a QR for `phone`; False when none waits (or wrong code)."""
        account = self.accounts.get(phone)
        if account is None or account.state != "waiting_qr" or account.peer is None:
            return False
        if code is not None and code != account.qr_code:
            return False
        peer = account.peer
        self._cancel_timers(account)
        account.creds = "sim1." + secrets.token_urlsafe(24)
        account.qr_code = None
        # Like WhatsApp after pairing, the client must reconnect and log in with its new creds.
        account.peer = None
        peer.send({"ev": "paired", "creds": account.creds})
        peer.close()
        return True

    def inbound(self, sender: str, to: str, text: str, media: dict | None = None) -> dict | None:
        """A person writes to account `to`; None when the network does not know `to`."""
        account = self.accounts.get(to)
        if account is None:
            return None
        now = self.clock()
        event = {"ev": "message", "from": sender, "text": text, "wa_id": new_wa_id(), "at": now,
                 "media": media}
        account.received += 1
        self.inbound_log.append({"id": event["wa_id"], "from": sender, "to": to, "text": text,
                                 "media": media, "at": now})
        self._deliver(account, event)
        return event

    def ban(self, phone: str, reason: str = "manual") -> bool:
        account = self.accounts.get(phone)
        if account is None:
            return False
        account.banned_reason, account.banned_at = reason, self.clock()
        account.creds = None
        if account.peer is not None:
            peer, account.peer = account.peer, None
            self._cancel_timers(account)
            peer.send({"ev": "banned", "reason": reason})
            peer.close()
        return True

    def disconnect(self, phone: str) -> bool | None:
        """Close the account's connection; None for an unknown account, False when offline."""
        account = self.accounts.get(phone)
        if account is None:
            return None
        if account.peer is None:
            return False
        peer, account.peer = account.peer, None
        self._cancel_timers(account)
        peer.close()
        return True

    def logout(self, phone: str) -> bool:
        """Revoke the linked device (as if removed on the phone): creds stop working."""
        account = self.accounts.get(phone)
        if account is None:
            return False
        account.creds = None
        if account.peer is not None:
            peer, account.peer = account.peer, None
            self._cancel_timers(account)
            peer.send({"ev": "logged_out", "reason": "device removed"})
            peer.close()
        return True

    def restrict(self, phone: str, seconds: float, reason: str = "reach-out time-lock") -> float | None:
        account = self.accounts.get(phone)
        if account is None:
            return None
        account.restricted_until = self.clock() + seconds
        account.restricted_reason = reason
        if account.peer is not None and account.peer.logged_in:  # else told at its next login
            account.peer.send(self._restricted_event(account))
        return account.restricted_until

    def list_messages(self, sender: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        return [dict(m) for m in self.messages
                if (not sender or m["from"] == sender) and (not to or m["to"] == to)]

    # -- internals -------------------------------------------------------------------------

    def _account_of(self, peer: Peer) -> Account | None:
        account = self.accounts.get(peer.phone) if peer.phone else None
        return account if account is not None and account.peer is peer else None

    def _deliver(self, account: Account, event: dict[str, Any]) -> None:
        if account.peer is not None and account.peer.logged_in:
            account.peer.send(event)
        elif account.banned_reason is None:
            account.pending.append(event)

    def _receipt(self, phone: str, wa_id: str, status: str) -> None:
        record = self._by_wa_id.get(wa_id)
        if record is not None:
            record["status"] = status
        account = self.accounts.get(phone)
        if account is not None:
            self._deliver(account, {"ev": "receipt", "wa_id": wa_id, "status": status, "at": self.clock()})

    def _remember(self, record: dict[str, Any]) -> None:
        if len(self.messages) == self.messages.maxlen:
            self._by_wa_id.pop(self.messages[0]["id"], None)
        self.messages.append(record)
        self._by_wa_id[record["id"]] = record

    def _restricted_event(self, account: Account) -> dict[str, Any]:
        return {"ev": "restricted", "reason": account.restricted_reason, "until": account.restricted_until}

    def _send_qr(self, account: Account) -> None:
        if account.peer is None or account.peer.logged_in:
            return
        account.qr_code = f"2@sim,{account.phone},{secrets.token_urlsafe(18)}"
        account.peer.send({"ev": "qr", "code": account.qr_code})
        loop = asyncio.get_running_loop()
        account.qr_timer = loop.call_later(self.config.qr_interval, self._send_qr, account)

    def _demo_scan(self, account: Account, peer: Peer) -> None:
        if account.peer is peer and not peer.logged_in:
            self.scan(account.phone)

    def _cancel_timers(self, account: Account) -> None:
        for timer in (account.qr_timer, account.scan_timer):
            if timer is not None:
                timer.cancel()
        account.qr_timer = account.scan_timer = None
