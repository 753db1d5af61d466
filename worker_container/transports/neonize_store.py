"""neonize's device store in PostgreSQL (SESSION_STORE=postgres://..., docs/session-store.md).

All sessions share one database. whatsmeow creates its tables itself, but concurrent first-time
creation races (duplicate pg_type rows), so the first worker creates them under an advisory lock
before any client connects, and again whenever the installed neonize differs from the one that
last did (its whatsmeow may bring a schema upgrade). A client is then built for exactly one
device: the JID `choose_device` found in the store, or a new device (never neither: without
either, whatsmeow resumes the first device of the database, another account's).
"""

from __future__ import annotations

import importlib.metadata
import logging
from types import SimpleNamespace
from typing import Any

from waorch.core import session_store
from worker_container.store import DeviceChoice, choose_device, forget_other_devices

log = logging.getLogger(__name__)

META_TABLE = "waorch_store_meta"
META_KEY = "whatsmeow_schema_by_neonize"


def neonize_version() -> str:
    try:
        return importlib.metadata.version("neonize")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _schema_current(conn: Any, version: str) -> bool:
    if session_store.whatsmeow_version(conn) is None or not session_store.table_exists(conn, META_TABLE):
        return False
    row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE name = %s", (META_KEY,)).fetchone()
    return bool(row) and row[0] == version


def ensure_schema(nz: SimpleNamespace, url: str, session_id: str) -> bool:
    """Create or upgrade whatsmeow's tables once for this neonize; True when this call did it.

    The lock is a transaction-level advisory lock (it works behind PgBouncer in transaction
    pooling) held while whatsmeow upgrades on its own connection: other workers wait for it.
    """
    version = neonize_version()
    with session_store.connection(url, application_name=f"waorch-{session_id}-schema") as conn:
        if _schema_current(conn, version):
            return False
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (session_store.WHATSMEOW_SCHEMA_LOCK,))
            if _schema_current(conn, version):
                return False
            log.info("creating/upgrading whatsmeow's tables in %s (neonize %s)",
                     session_store.redact(url), version)
            try:
                # whatsmeow's sqlstore.New runs the upgrade (on its own connection), then lists the
                # devices. neonize's parsing of that list fails on push names with a comma: the
                # upgrade is done by then. Its pool stays open until this process ends (one
                # connection, in the one worker that did this).
                schema_url = session_store.whatsmeow_url(url, f"{session_id}-schema")
                nz.ClientFactory.get_all_devices_from_db(schema_url)
            except ValueError:
                log.debug("device listing not parsed (the upgrade ran)", exc_info=True)
            if session_store.whatsmeow_version(conn) is None:
                raise session_store.StoreUnavailable(f"whatsmeow could not create its tables in "
                                                     f"{session_store.redact(url)} (see the worker log)")
            # recorded before the lock is released: the next worker waiting for it then skips
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} "
                         "(name text PRIMARY KEY, value text NOT NULL)")
            conn.execute(f"INSERT INTO {META_TABLE} (name, value) VALUES (%s, %s) "
                         "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", (META_KEY, version))
    return True


def prepare(nz: SimpleNamespace, url: str, session_id: str, device_jid: str, phone: str) -> DeviceChoice:
    """Schema ready, then the device this session's client is built for."""
    ensure_schema(nz, url, session_id)
    with session_store.connection(url, application_name=f"waorch-{session_id}") as conn:
        return choose_device(conn, device_jid, phone)


def jid_proto(nz: SimpleNamespace, text: str) -> Any:
    """neonize's JID protobuf for a device JID string, every required field set (a partial one
    fails to serialise; neonize's build_jid would put "user:device" in User)."""
    parts = session_store.parse_jid(text)
    if parts is None:
        raise ValueError(f"not a device JID: {text!r}")
    return nz.proto.JID(User=parts.user, RawAgent=parts.agent, Device=parts.device, Integrator=0,
                        Server=parts.server, IsEmpty=False)


def jid_text(jid: Any) -> str:
    """A JID protobuf as whatsmeow writes it (`user[.agent][:device]@server`); "" when empty."""
    if jid is None or not getattr(jid, "User", ""):
        return ""
    agent = f".{jid.RawAgent}" if jid.RawAgent else ""
    device = f":{jid.Device}" if jid.Device else ""
    return f"{jid.User}{agent}{device}@{jid.Server}"


def after_pairing(url: str, session_id: str, phone: str, jid: str) -> list[str]:
    """A new device is paired: this phone's older devices in the store are dead; delete them."""
    with session_store.connection(url, application_name=f"waorch-{session_id}") as conn:
        return forget_other_devices(conn, phone, jid)


def after_logout(url: str, session_id: str, jid: str) -> None:
    """whatsmeow deleted the device row itself on a logout; its privacy tokens are left over."""
    with session_store.connection(url, application_name=f"waorch-{session_id}") as conn:
        session_store.delete_device(conn, jid)
