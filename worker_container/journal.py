"""At-most-once delivery: an fsync'ed, append-only record of what happened to each claimed message.

Every record is one JSON line, fsync'ed before the call returns. `sending` is written BEFORE the
transport is asked to send, so after a crash a message is either known never to have been handed
to WhatsApp (only `claimed`), known sent (`sent`, with its wa_id), or of unknown outcome
(`sending` without `sent`), which is never sent again.

Once the orchestrator has been told (or refused to listen), an entry is `settled`. A settled entry
that was sent, or whose send was interrupted, is still kept for `retention` seconds: should the
same message be claimed again (the orchestrator lost our answer, or its lease expired first), it is
answered from the journal and never handed to WhatsApp a second time. Other settled entries go.

Records: {"op": "claimed", "id", "to", "lease_token", "at"} · {"op": "sending", "id", "at"} ·
{"op": "sent", "id", "wa_id", "sent_at", "at"} · {"op": "failed", "id", "reason", "retryable",
"detail", "at"} · {"op": "acked"|"nacked"|"refused", "id", "at"} · {"op": "entry", ...} (a whole
entry, written by compaction).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

INTERRUPTED_DETAIL = "interrupted during send; not retried to avoid a duplicate"
NEVER_SENT_DETAIL = "claimed before the worker stopped; never sent"

# States of an entry, and the ops that settle one.
CLAIMED, SENDING, SENT, FAILED = "claimed", "sending", "sent", "failed"
ACKED, NACKED, REFUSED = "acked", "nacked", "refused"
_REMEMBERED = (SENDING, SENT)  # settled entries worth keeping: handed (maybe) to WhatsApp


@dataclass
class Entry:
    id: str
    state: str = CLAIMED
    to: str = ""
    lease_token: str = ""
    wa_id: str = ""
    sent_at: float | None = None
    reason: str = ""
    retryable: bool = True
    detail: str = ""
    settled: bool = False  # the orchestrator knows (or refused to hear); kept only for lookup()
    updated_at: float = 0.0

    @property
    def was_sent(self) -> bool:
        """True when the transport reported the message as handed to WhatsApp."""
        return bool(self.wa_id)


@dataclass(frozen=True)
class Action:
    """What reconcile() asks the worker to tell the orchestrator about one message."""

    kind: str  # "ack" or "nack"
    msg_id: str
    lease_token: str
    wa_id: str = ""
    sent_at: float | None = None
    reason: str = ""
    retryable: bool = True
    detail: str = ""


@dataclass
class _Stats:
    records_since_compaction: int = 0
    torn_lines: int = 0
    bad_lines: int = 0


class Journal:
    """The outbox journal of one session, `path` (created with its directory if missing)."""

    def __init__(self, path: str, compact_bytes: int = 256 * 1024, retention: float = 86400.0) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.retention = retention
        self.stats = _Stats()
        self._entries: dict[str, Entry] = {}
        self._compacted_size = 0
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._load()
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for the journal's lifetime

    # ----- reading -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                # A record without its newline was being written when the process died: its
                # fsync never returned, so the step it records never started. Drop it.
                self.stats.torn_lines += 1
                log.warning("journal %s: ignoring a torn last record (%d bytes)", self.path, len(data) - pos)
                break
            line = data[pos:nl]
            pos = nl + 1
            if line.strip():
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                        raise ValueError("not a record")
                    self._apply(record)
                except (ValueError, TypeError):
                    self.stats.bad_lines += 1
                    log.warning("journal %s: ignoring an unreadable record", self.path)
            good_end = pos
        if good_end < len(data):
            # Cut the torn tail so that the next record does not get glued to it.
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def _apply(self, record: dict[str, Any]) -> None:
        op, msg_id = record.get("op"), record["id"]
        at = float(record.get("at") or 0.0)
        if op == "entry":
            known = {k: v for k, v in record.items() if k in Entry.__dataclass_fields__}
            self._entries[msg_id] = Entry(**known)
            return
        entry = self._entries.get(msg_id)
        if op == CLAIMED:
            if entry is None:
                entry = self._entries[msg_id] = Entry(id=msg_id)
            # A re-claim keeps what we know about the message and only refreshes the lease.
            entry.to = record.get("to") or entry.to
            entry.lease_token = record.get("lease_token") or ""
            entry.settled = False  # claimed again: it needs an answer again
        elif entry is None:
            log.warning("journal %s: %s record for unknown message %s ignored", self.path, op, msg_id)
            return
        elif op == SENDING:
            entry.state = SENDING
        elif op == SENT:
            entry.state = SENT
            entry.wa_id = str(record.get("wa_id") or "")
            entry.sent_at = record.get("sent_at")
        elif op == FAILED:
            entry.state = FAILED
            entry.reason = str(record.get("reason") or "send_error")
            entry.retryable = bool(record.get("retryable"))
            entry.detail = str(record.get("detail") or "")
        elif op in (ACKED, NACKED, REFUSED):
            if entry.state not in _REMEMBERED:
                del self._entries[msg_id]
                return
            entry.settled = True
        else:
            log.warning("journal %s: unknown op %r ignored", self.path, op)
            return
        entry.updated_at = at

    def lookup(self, msg_id: str) -> Entry | None:
        """What the journal knows about a message (a copy), settled or not, or None."""
        with self._lock:
            entry = self._entries.get(msg_id)
            return Entry(**asdict(entry)) if entry else None

    def open_entries(self) -> list[Entry]:
        """Copies of the entries the orchestrator still has to be told about."""
        with self._lock:
            return [Entry(**asdict(e)) for e in self._entries.values() if not e.settled]

    def reconcile(self) -> list[Action]:
        """What to tell the orchestrator about messages a previous run left unfinished."""
        actions = []
        for e in self.open_entries():
            if e.settled:
                continue
            if e.state == SENT:
                actions.append(Action("ack", e.id, e.lease_token, wa_id=e.wa_id, sent_at=e.sent_at))
            elif e.state == SENDING:
                actions.append(Action("nack", e.id, e.lease_token, reason="send_error", retryable=False,
                                      detail=INTERRUPTED_DETAIL))
            elif e.state == FAILED:
                actions.append(Action("nack", e.id, e.lease_token, reason=e.reason, retryable=e.retryable,
                                      detail=e.detail))
            elif e.state == CLAIMED:
                actions.append(Action("nack", e.id, e.lease_token, reason="session_lost", retryable=True,
                                      detail=NEVER_SENT_DETAIL))
        return actions

    # ----- writing -------------------------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        record.setdefault("at", time.time())
        line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._apply(record)
            self.stats.records_since_compaction += 1

    def claimed(self, msg_id: str, to: str, lease_token: str) -> None:
        self._write({"op": CLAIMED, "id": msg_id, "to": to, "lease_token": lease_token})

    def sending(self, msg_id: str) -> None:
        """Durably record that the send is about to start; call BEFORE transport.send."""
        self._write({"op": SENDING, "id": msg_id})

    def sent(self, msg_id: str, wa_id: str, sent_at: float) -> None:
        self._write({"op": SENT, "id": msg_id, "wa_id": wa_id, "sent_at": sent_at})

    def failed(self, msg_id: str, reason: str, retryable: bool, detail: str = "") -> None:
        self._write({"op": FAILED, "id": msg_id, "reason": reason, "retryable": retryable, "detail": detail})

    def acked(self, msg_id: str) -> None:
        self._write({"op": ACKED, "id": msg_id})
        self.maybe_compact()

    def nacked(self, msg_id: str) -> None:
        self._write({"op": NACKED, "id": msg_id})
        self.maybe_compact()

    def refused(self, msg_id: str) -> None:
        """The orchestrator refused our ACK/NACK: stop reporting it (it would refuse again)."""
        self._write({"op": REFUSED, "id": msg_id})
        self.maybe_compact()

    # ----- compaction ----------------------------------------------------------------------

    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def maybe_compact(self) -> bool:
        """Compact when the file has grown past `compact_bytes` (and doubled since the last
        compaction, so that many remembered entries do not make every write compact); True when it did."""
        if self.size() < max(self.compact_bytes, 2 * self._compacted_size):
            return False
        self.compact()
        return True

    def compact(self, now: float | None = None) -> None:
        """Rewrite the file with one record per open entry, atomically (write, fsync, rename)."""
        current = now if now is not None else time.time()
        with self._lock:
            for msg_id, e in list(self._entries.items()):
                if e.settled and current - e.updated_at > self.retention:
                    del self._entries[msg_id]
            tmp = self.path + ".tmp"
            with open(tmp, "wb") as f:
                for e in self._entries.values():
                    record = {"op": "entry", **asdict(e)}
                    f.write(json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self._compacted_size = os.path.getsize(tmp)
            os.replace(tmp, self.path)
            self._fsync_dir()
            self._file.close()
            self._file = open(self.path, "ab")  # noqa: SIM115
            self.stats.records_since_compaction = 0

    def _fsync_dir(self) -> None:
        # The rename is only durable once the directory entry is on disk.
        fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
