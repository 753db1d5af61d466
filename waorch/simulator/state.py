"""The simulated network's memory: accounts, their connections, messages; and what happens on events.

Everything here runs on the simulator's event loop thread; connections are reached through the
small `Peer` interface so that the wire server owns all socket handling. Chat features (presence,
read, reactions, LIDs, blocks, reach-out locks) are in `chat.py`; saving in `persistence.py`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from waorch.simulator.accounts import CODE_RESTRICTED, Account, Peer
from waorch.simulator.chat import ChatFeatures
from waorch.simulator.config import SimConfig
from waorch.simulator.lids import is_lid, lid_of, phone_of
from waorch.simulator.logs import EventLog, Message, MessageLog, new_wa_id
from waorch.simulator.media import media_problem

__all__ = ["PHONE", "Network", "Peer", "SimConfig"]

PHONE = re.compile(r"^[1-9]\d{6,14}$")
MAX_CROSS_SENDS = 10_000  # (account, client id) pairs of ids first sent by another account
MAX_INCIDENTS = 1_000  # fencing incidents kept for GET /sim/stats
STATUS_RANK = {"sent": 0, "delivered": 1, "read": 2}


class Network(ChatFeatures):
    """All accounts and messages of one simulator run."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.messages = MessageLog()
        self.inbound_log = MessageLog()
        self.events = EventLog()
        self.seq = 0
        self.second_connections = 0
        self.duplicate_sends = 0
        self.duplicates_delivered = 0
        self.incidents: deque[dict[str, Any]] = deque(maxlen=MAX_INCIDENTS)
        self.on_change: Callable[[], None] = lambda: None  # set by the store that saves the network
        self.store_info: dict[str, Any] = {}
        self._by_client_id: dict[str, Message] = {}  # first accepted send of each client id
        self._cross_sends: OrderedDict[tuple[str, str], Message] = OrderedDict()

    # -- wire side -------------------------------------------------------------------------

    def hello(self, peer: Peer, phone: str, session: str, device: dict[str, Any],
              creds: str | None) -> None:
        account = self.accounts.get(phone)
        if account is None:
            account = self.accounts[phone] = Account(phone=phone)
        self._touch(account)
        peer.phone, peer.session = phone, session
        if account.peer is not None and account.peer is not peer:
            old, account.peer = account.peer, None
            self._second_connection(account, old, peer)
            self._cancel_timers(account)
            old.send({"ev": "replaced"})
            old.close()
        if account.banned_reason is not None:
            peer.send(self._banned_event(account))
            peer.close()
            return
        account.session, account.device = session, device
        ban = account.activity.on_source(peer.source_address, self.clock(), self.config.ban_thresholds)
        if ban is not None:
            account.peer = peer
            self.ban(phone, ban.reason, ban.code)
            return
        if creds is not None:
            if account.creds is None or not secrets.compare_digest(creds, account.creds):
                peer.send({"ev": "logged_out", "reason": "unknown credentials"})
                peer.close()
                return
            account.peer = peer
            peer.logged_in = True
            peer.send({"ev": "connected", "jid": f"{phone}@s.whatsapp.net", "lid": account.lid})
            now = self.clock()
            if account.restricted_until and account.restricted_until > now:
                peer.send(self._restricted_event(account))
            if account.reachout_until and account.reachout_until > now:
                peer.send(self._reachout_event(account))
            pending, account.pending = account.pending, []
            for event in pending:
                peer.send(event)
            return
        account.peer = peer
        self._send_qr(account)
        loop = asyncio.get_running_loop()
        if self.config.autopair:  # no timer per account: a fleet of thousands pairs at once
            loop.call_soon(self._auto_scan, account, peer)
        elif self.config.demo_scan_after is not None:
            account.scan_timer = loop.call_later(self.config.demo_scan_after, self._auto_scan, account, peer)

    def gone(self, peer: Peer) -> None:
        """A connection closed (either side)."""
        account = self._account_of(peer)
        if account is not None:
            account.peer = None
            self._cancel_timers(account)

    def send(self, peer: Peer, ref: Any, to: Any, text: Any, media: Any, client_id: Any = None,
             reply_to: Any = None) -> None:
        """A send request; `client_id` (the client's message id) makes a resend return the first result."""
        account = self._account_of(peer)

        def fail(code: str, detail: str, retryable: bool, **extra: Any) -> None:
            peer.send({"ev": "send_result", "ref": ref, "ok": False, "code": code, "detail": detail,
                       "retryable": retryable, **extra})

        if account is None or not peer.logged_in:
            return fail("NOT_CONNECTED", "log in first", True)
        cid = client_id if isinstance(client_id, str) and client_id else None
        earlier = self._earlier_send(account, cid) if cid else None
        if earlier is not None:  # a resend after a lost answer: not sent again
            peer.send({"ev": "send_result", "ref": ref, "ok": True, "wa_id": earlier.id, "ts": earlier.at,
                       "duplicate": True})
            return None
        person, to_lid = self.recipient(to)
        if person is None:
            return fail("INVALID_RECIPIENT", "recipient must be E.164 digits or a known <digits>@lid", False)
        if not (isinstance(text, str) and text) and not isinstance(media, dict):
            return fail("EMPTY_MESSAGE", "text or media required", False)
        problem = media_problem(media)
        if problem is not None:
            return fail(*problem, False)
        quoted = isinstance(reply_to, str) and self.in_chat(account, person, reply_to)
        if reply_to is not None and not quoted:
            return fail("UNKNOWN_QUOTED", "reply_to is not a message of this chat", False)
        now = self.clock()
        if account.restricted_until and account.restricted_until > now:
            return fail(CODE_RESTRICTED, account.restricted_reason or "restricted", True,
                        restricted_until=account.restricted_until, scope="all")
        first_contact = not account.has_conversation(person)
        if first_contact and account.reachout_until and account.reachout_until > now:
            return fail(CODE_RESTRICTED, account.reachout_reason or "reach-out time-lock", True,
                        restricted_until=account.reachout_until, scope="new_chats")
        text = text if isinstance(text, str) else ""
        ban = account.activity.on_send(now, self.config.ban_thresholds, first_contact=first_contact,
                                       person=person, text=text)
        self._touch(account)
        if ban is not None:
            fail("BANNED", ban.reason, True, ban_code=ban.code)  # not sent: another account may send it
            self.ban(account.phone, ban.reason, ban.code)
            return None
        record = Message(id=new_wa_id(), sender=account.phone, to=person, text=text,
                         media=media if isinstance(media, dict) else None, at=now, seq=self.next_seq(),
                         source_address=peer.source_address, session=peer.session, client_id=cid,
                         reply_to=reply_to, to_lid=to_lid)
        self._remember(account, record)
        account.sent += 1
        peer.send({"ev": "send_result", "ref": ref, "ok": True, "wa_id": record.id, "ts": now})
        self._route(account, record)
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
        self._touch(account)
        # Like WhatsApp after pairing, the client must reconnect and log in with its new creds.
        account.peer = None
        peer.send({"ev": "paired", "creds": account.creds})
        peer.close()
        return True

    def inbound(self, sender: str, to: str, text: str, media: dict | None = None, *, as_lid: bool = False,
                with_phone: bool = True, reply_to: str | None = None) -> Message | None:
        """A person writes to account `to`; None when the network does not know `to`.

        `as_lid`: the event names the person by LID, with their phone as `sender_alt` only when
        `with_phone`; without it the account's device learns no phone for that LID.
        """
        account = self.accounts.get(to)
        if account is None:
            return None
        now = self.clock()
        message = Message(id=new_wa_id(), sender=sender, to=to, text=text, media=media, at=now,
                          seq=self.next_seq(), inbound=True, reply_to=reply_to,
                          from_lid=lid_of(sender) if as_lid else None, sender_alt=as_lid and with_phone)
        event = {"ev": "message", "from": message.from_lid or sender, "text": text, "wa_id": message.id,
                 "at": now, "media": media, "reply_to": reply_to}
        if as_lid and with_phone:
            event["sender_alt"] = sender
        account.received += 1
        account.converse(sender, now, phone_known=not as_lid or with_phone)
        self.inbound_log.append(message)
        self._touch(account)
        self._deliver(account, event)
        return message

    def ban(self, phone: str, reason: str = "manual", code: int | None = None) -> bool:
        account = self.accounts.get(phone)
        if account is None:
            return False
        account.banned_reason, account.banned_code, account.banned_at = reason, code, self.clock()
        account.creds = None
        self._touch(account)
        if account.peer is not None:
            peer, account.peer = account.peer, None
            self._cancel_timers(account)
            peer.send(self._banned_event(account))
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
        self._touch(account)
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
        self._touch(account)
        if account.peer is not None and account.peer.logged_in:  # else told at its next login
            account.peer.send(self._restricted_event(account))
        return account.restricted_until

    def list_messages(self, sender: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        return [m.view() for m in self.messages
                if (not sender or m.sender == sender) and (not to or m.to == to)]

    def restore_sent(self, record: Message) -> None:
        """A message of the saved network: logged and indexed again, nothing counted or sent."""
        self.messages.append(record)
        cid = record.client_id
        if cid is not None and self._by_client_id.setdefault(cid, record) is not record:
            self._cross_sends[(record.sender, cid)] = record

    def resume(self) -> None:
        """After loading a saved network: finish the receipts that were due while it was down."""
        loop = asyncio.get_running_loop()
        for message in self.messages:
            if message.status != "read" and self._receipts_due(message):
                loop.call_soon(self._receipt, message.sender, message.id, "delivered")
                loop.call_later(self.config.read_delay, self._receipt, message.sender, message.id, "read")

    # -- internals -------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def recipient(self, to: Any) -> tuple[str | None, str | None]:
        """(person's phone, the LID it was addressed by) of a send's `to`; (None, None) if invalid."""
        if not isinstance(to, str):
            return None, None
        if is_lid(to):
            return phone_of(to), to
        return (to, None) if PHONE.match(to) else (None, None)

    def _touch(self, account: Account) -> None:
        account.encoded = None
        self.on_change()

    def _account_of(self, peer: Peer) -> Account | None:
        account = self.accounts.get(peer.phone) if peer.phone else None
        return account if account is not None and account.peer is peer else None

    def _earlier_send(self, account: Account, client_id: str) -> Message | None:
        """The message this account already sent with `client_id`, counting the repeat; else None."""
        first = self._by_client_id.get(client_id)
        if first is None:
            return None
        earlier = first if first.sender == account.phone \
            else self._cross_sends.get((account.phone, client_id))
        if earlier is not None:
            self.duplicate_sends += 1
            account.duplicate_sends += 1
            self._touch(account)
        return earlier

    def _remember(self, account: Account, record: Message) -> None:
        evicted = self.messages.append(record)
        if evicted is not None and evicted.client_id is not None:
            if self._by_client_id.get(evicted.client_id) is evicted:
                del self._by_client_id[evicted.client_id]
            self._cross_sends.pop((evicted.sender, evicted.client_id), None)
        cid = record.client_id
        if cid is None:
            return
        first = self._by_client_id.setdefault(cid, record)
        if first is record:
            return
        # The same message id again, through another account: a rerouted message the person gets twice.
        self._cross_sends[(account.phone, cid)] = record
        if len(self._cross_sends) > MAX_CROSS_SENDS:
            self._cross_sends.popitem(last=False)
        self.duplicate_sends += 1
        self.duplicates_delivered += 1
        account.duplicate_sends += 1
        account.duplicates_delivered += 1
        self._incident("duplicate_delivered", account.phone, client_id=cid, first_from=first.sender,
                       first_wa_id=first.id, wa_id=record.id, to=record.to)

    def _route(self, account: Account, record: Message) -> None:
        """Hand a sent message to the recipient (when simulated) and schedule its receipts."""
        if not self._receipts_due(record):
            return  # blocked, or a banned number: one tick only, never delivered
        recipient = self.accounts.get(record.to)
        if recipient is not None:
            recipient.received += 1
            recipient.converse(account.phone, record.at)
            self._touch(recipient)
            self._deliver(recipient, {"ev": "message", "from": account.phone, "text": record.text,
                                      "wa_id": record.id, "at": record.at, "media": record.media,
                                      "reply_to": record.reply_to})
        loop = asyncio.get_running_loop()
        delivered = self.config.receipt_delay
        loop.call_later(delivered, self._receipt, account.phone, record.id, "delivered")
        loop.call_later(delivered + self.config.read_delay, self._receipt, account.phone, record.id, "read")

    def _receipts_due(self, record: Message) -> bool:
        sender, recipient = self.accounts.get(record.sender), self.accounts.get(record.to)
        if recipient is not None and recipient.banned_reason is not None:
            return False
        return not (sender is not None and sender.blocked(record.to))

    def _deliver(self, account: Account, event: dict[str, Any]) -> None:
        if account.peer is not None and account.peer.logged_in:
            account.peer.send(event)
        elif account.banned_reason is None:
            account.queue(event)
            self._touch(account)

    def _receipt(self, phone: str, wa_id: str, status: str) -> None:
        record = self.messages.get(wa_id)
        if record is None or STATUS_RANK[status] <= STATUS_RANK[record.status]:
            return  # gone from the log, or already that far (read by the recipient itself)
        record.status = status
        self.on_change()
        account = self.accounts.get(phone)
        if account is not None:
            if status == "delivered":  # addressed by LID, the device still does not know the phone
                account.converse(record.to, self.clock(), phone_known=record.to_lid is None)
                self._touch(account)
            self._deliver(account, {"ev": "receipt", "wa_id": wa_id, "status": status, "at": self.clock()})

    def _second_connection(self, account: Account, old: Peer, new: Peer) -> None:
        self.second_connections += 1
        account.second_connections += 1
        # How long the old client had been silent: a live one pings, a dead socket does not.
        idle = round(time.monotonic() - old.last_seen, 3) if hasattr(old, "last_seen") else None
        self._incident("second_connection", account.phone, old_session=old.session,
                       new_session=new.session, old_source=old.source_address,
                       new_source=new.source_address, old_logged_in=old.logged_in, old_idle_seconds=idle)

    def _incident(self, kind: str, phone: str, **details: Any) -> None:
        self.incidents.append({"kind": kind, "phone": phone, "at": self.clock(), **details})

    def _banned_event(self, account: Account) -> dict[str, Any]:
        return {"ev": "banned", "reason": account.banned_reason, "code": account.banned_code}

    def _restricted_event(self, account: Account) -> dict[str, Any]:
        return {"ev": "restricted", "reason": account.restricted_reason, "until": account.restricted_until}

    def _reachout_event(self, account: Account) -> dict[str, Any]:
        return {"ev": "reachout_lock", "reason": account.reachout_reason, "until": account.reachout_until}

    def _send_qr(self, account: Account) -> None:
        if account.peer is None or account.peer.logged_in:
            return
        account.qr_code = f"2@sim,{account.phone},{secrets.token_urlsafe(18)}"
        account.peer.send({"ev": "qr", "code": account.qr_code})
        if not self.config.autopair:
            loop = asyncio.get_running_loop()
            account.qr_timer = loop.call_later(self.config.qr_interval, self._send_qr, account)

    def _auto_scan(self, account: Account, peer: Peer) -> None:
        if account.peer is peer and not peer.logged_in:
            self.scan(account.phone)

    def _cancel_timers(self, account: Account) -> None:
        for timer in (account.qr_timer, account.scan_timer):
            if timer is not None:
                timer.cancel()
        account.qr_timer = account.scan_timer = None

