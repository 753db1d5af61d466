"""The control plane's side of the session store (WAORCH_SESSION_STORE, docs/session-store.md).

- Deleting a session for good deletes its device from a PostgreSQL store. Not at once: its worker
  is still being stopped and a live whatsmeow client may write its device row again. The deletion
  is queued in `store:forget` (ZSET, score = earliest time) and done by the watchdog round once
  the runner no longer lists the worker (`forget_due`).
- What `waorch doctor` reports about the store (`inspect`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import redis

from waorch.core import keys, session_store, settings
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

FORGET_GRACE = 30.0  # seconds after the delete: well above a worker's ~10 s stop


def configured() -> str:
    """WAORCH_SESSION_STORE, checked: `file` or a postgres:// URL."""
    return session_store.parse(settings.get().session_store)


def uses_postgres() -> bool:
    return configured() != session_store.FILE


def forget_later(r: redis.Redis, session: dict, now: float | None = None) -> bool:
    """Queue the deletion of a deleted session's device (its JID) and sim credentials."""
    if not uses_postgres():
        return False
    now = time.time() if now is None else now
    item = json.dumps({"session": session["id"], "jid": session.get("jid") or ""}, sort_keys=True)
    r.zadd(keys.STORE_FORGET, {item: now + FORGET_GRACE})
    return True


def forget_due(r: redis.Redis, alive: set[str], now: float | None = None) -> list[str]:
    """Delete the queued devices whose time has come and whose worker the runner no longer runs;
    the session ids done. A store that cannot be reached leaves them queued."""
    if not uses_postgres():
        return []
    now = time.time() if now is None else now
    due = r.zrangebyscore(keys.STORE_FORGET, "-inf", now)
    todo = [(item, json.loads(item)) for item in due]
    todo = [(item, entry) for item, entry in todo
            if entry["session"] not in alive and not r.exists(keys.session(entry["session"]))]
    if not todo:
        return []
    done = []
    try:
        with session_store.connection(configured(), application_name="waorch-orchestrator") as conn:
            for item, entry in todo:
                deleted = 0
                if session_store.parse_jid(entry["jid"]):
                    deleted = session_store.delete_device(conn, entry["jid"])
                deleted += session_store.delete_sim_creds(conn, entry["session"])
                r.zrem(keys.STORE_FORGET, item)
                log.info("session %s: device %s deleted from the store (%d rows)", entry["session"],
                         entry["jid"] or "-", deleted)
                done.append(entry["session"])
    except session_store.StoreUnavailable as exc:
        log.warning("session store: queued device deletions wait: %s", exc)
    return done


@dataclass
class StoreReport:
    """What `inspect` found; `problems` are FAILs, `warnings` WARNs."""

    where: str
    whatsmeow_version: int | None = None
    devices: int = 0
    sim_sessions: int = 0
    missing: list[str] = field(default_factory=list)  # sessions whose recorded device is not there
    unknown: list[str] = field(default_factory=list)  # devices no session records
    pending_deletions: int = 0


def inspect(r: redis.Redis, url: str, transport: str) -> StoreReport:
    """Reach the store at `url` and compare it with the registry (sessions of `transport`);
    StoreUnavailable when it cannot."""
    report = StoreReport(where=session_store.redact(url))
    report.pending_deletions = r.zcard(keys.STORE_FORGET)
    registered = sessions.list_sessions(r)
    with session_store.connection(url, application_name="waorch-doctor") as conn:
        report.whatsmeow_version = session_store.whatsmeow_version(conn)
        stored = set(session_store.devices(conn))
        sim = set(session_store.sim_sessions(conn))
    report.devices, report.sim_sessions = len(stored), len(sim)
    recorded = set()
    neonize = transport == "neonize"
    for session in registered:
        jid = session.get("jid") or ""
        if session_store.parse_jid(jid) is None:
            continue  # never paired (or paired before the JID was recorded in full)
        recorded.add(jid)
        present = jid in stored if neonize else session["id"] in sim
        if not present:
            report.missing.append(session["id"])
    if neonize:
        report.unknown = sorted(stored - recorded)
    return report
