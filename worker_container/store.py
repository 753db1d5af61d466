"""The worker's side of the session store (SESSION_STORE, docs/session-store.md).

- Sim credentials: a file in the session's directory (`file`), or a row of `waorch_sim_devices`
  (PostgreSQL), so that a sandbox session survives the loss of its directory like a real one.
- neonize's device: which device JID a new client may resume. `NewClient(jid=...)` with a JID
  that is not in the store kills the process (a Go panic), so a JID is only ever passed after
  `choose_device` found it there; otherwise the session pairs as a new device.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

from waorch.core import session_store

log = logging.getLogger(__name__)

SIM_CREDS_FILE = "sim-creds.json"
DEVICE_MISSING = "DEVICE_MISSING"  # the ERROR code when the registry's device is not in the store


class SimCreds:
    """The sim transport's credentials of one session, wherever the store keeps them."""

    def __init__(self, store: str, session_id: str, phone: str, session_dir: str) -> None:
        self.store = session_store.parse(store)
        self.session_id = session_id
        self.phone = phone
        self.session_dir = session_dir

    @property
    def path(self) -> str:
        return os.path.join(self.session_dir, SIM_CREDS_FILE)

    def _connection(self):
        return session_store.connection(self.store, application_name=f"waorch-{self.session_id}")

    def load(self) -> str | None:
        """The stored credentials, or None (pair again). A store that cannot be reached raises
        StoreUnavailable: pairing again would cost a scan, waiting costs nothing."""
        if self.store != session_store.FILE:
            with self._connection() as conn:
                return session_store.load_sim_creds(conn, self.session_id, self.phone)
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable %s; pairing again", SIM_CREDS_FILE)
            return None
        if not isinstance(data, dict) or data.get("phone") != self.phone:
            return None
        creds = data.get("creds")
        return creds if isinstance(creds, str) and creds else None

    def save(self, creds: str) -> None:
        if self.store != session_store.FILE:
            with self._connection() as conn:
                session_store.save_sim_creds(conn, self.session_id, self.phone, creds, time.time())
            return
        os.makedirs(self.session_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sim-creds-", dir=self.session_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"phone": self.phone, "creds": creds, "paired_at": time.time()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self) -> None:
        if self.store != session_store.FILE:
            with self._connection() as conn:
                session_store.delete_sim_creds(conn, self.session_id)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass(frozen=True)
class DeviceChoice:
    """What a neonize client starts as: `jid` (a device found in the store) or a new device."""

    jid: str | None
    note: str = ""  # why, for the log; set when the registry's JID could not be used
    missing: str = ""  # the registry's JID that is not in the store (reported as DEVICE_MISSING)


def choose_device(conn, device_jid: str, phone: str) -> DeviceChoice:
    """The device to resume: the registry's JID if the store has it, else the one device of this
    phone in the store (a JID the registry never heard of, e.g. its CONNECTED was lost, or a
    container restarted with an old environment), else None: pair a new device."""
    wanted = device_jid if session_store.parse_jid(device_jid) else ""
    if wanted and session_store.device_exists(conn, wanted):
        return DeviceChoice(wanted)
    mine = [jid for jid in session_store.devices(conn)
            if phone and (parsed := session_store.parse_jid(jid)) is not None and parsed.user == phone]
    missing = device_jid if device_jid else ""
    if len(mine) == 1:
        why = f"device {device_jid} is not in the store; " if device_jid else "no device JID recorded; "
        return DeviceChoice(mine[0], note=why + f"resuming this phone's device {mine[0]}")
    if len(mine) > 1:
        return DeviceChoice(None, missing=missing,
                            note=f"{len(mine)} devices of this phone in the store and none recorded: "
                                 "pairing a new device")
    if device_jid:
        return DeviceChoice(None, missing=missing, note=f"device {device_jid} is not in the store "
                                                        "(logged out, deleted or another database): "
                                                        "pairing a new device")
    return DeviceChoice(None)


def forget_other_devices(conn, phone: str, keep: str) -> list[str]:
    """After a new pairing: this phone's older devices in the store are dead links; delete them
    (WhatsApp gives a re-paired phone a new device number)."""
    gone = []
    for jid in session_store.devices(conn):
        parsed = session_store.parse_jid(jid)
        if parsed is not None and parsed.user == phone and jid != keep:
            session_store.delete_device(conn, jid)
            gone.append(jid)
    return gone
