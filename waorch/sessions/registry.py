"""The session registry: one HASH per session in Redis, changed only through Lua scripts.

Statuses: starting, pairing, connected, disconnected, error, banned, logged_out, stopped.
Desired state is membership of `sessions:active`; runners and the watchdog converge on it.
Own keys besides SPEC section 8: sessions:tenant:<tenant> (SET), session:by_phone:<phone>.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

import redis

from waorch.core import keys, lua, session_store, settings, signing
from waorch.proxies.pool import proxy_id, redact
from waorch.webhooks import events as client_events

log = logging.getLogger(__name__)

TRANSITION = lua.Script("sessions/transition",
                        args=("session_id", "status", "now", "force", "desired", "event", "events_cap",
                              "qr_mode", "qr", "qr_ttl", "count_restart"), rest="fields")
RECORD_PING = lua.Script("sessions/record_ping",
                         args=("session_id", "now", "connected", "event", "events_cap"),
                         rest="counters")
CREATE = lua.Script("sessions/create", args=("session_id", "tenant", "phone", "now", "status"), rest="fields")
DELETE = lua.Script("sessions/delete", args=("session_id", "proxy_ceiling"))

SessionStatus = Literal["starting", "pairing", "connected", "disconnected", "error", "banned",
                        "logged_out", "stopped"]
STATUSES: tuple[SessionStatus, ...] = get_args(SessionStatus)
# Sessions in these states will not send again without an operator (their messages are rerouted).
DEAD_STATUSES = frozenset({"banned", "logged_out", "stopped"})
EVENTS_CAP = 200
QR_TTL = 180  # a QR is only useful for a minute or two; an old one must not linger
DEFAULT_TRUST = "new"
_FLOATS = ("created_at", "started_at", "last_ping", "paused_until", "status_at", "connected_at")
_INTS = ("restarts", "sent", "failed", "claimed")


class SessionRecord(TypedDict, total=False):
    """A session as `get_session` reads it: numbers parsed, the raw proxy URL (internal use only)."""

    id: str
    tenant: str
    phone: str
    status: SessionStatus
    desired: Literal["active", "stopped"]
    label: str
    trust_level: str
    proxy_url: str
    profile: dict[str, Any]
    salt: str
    jid: str  # the full device JID (`491700000001:7@s.whatsapp.net`) since issue 13
    last_error: str
    moving: str  # unix time a `waorch session move` began; "" or absent when none
    node_labels: str
    created_at: float | None
    started_at: float | None
    status_at: float | None
    connected_at: float | None
    last_ping: float | None
    paused_until: float | None
    restarts: int
    sent: int
    failed: int
    claimed: int


class SessionExists(RuntimeError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"this phone already has session {session_id}")
        self.session_id = session_id


def tenant_sessions_key(tenant: str) -> str:
    return f"sessions:tenant:{tenant}"


def sessions_root() -> Path:
    """`<WAORCH_DATA_DIR>/sessions`: each session's data volume is a directory in it."""
    return Path(settings.get().data_dir).resolve() / "sessions"


# --- reading -------------------------------------------------------------------------------

def _parse(record: dict[str, str]) -> SessionRecord:
    session: dict[str, Any] = dict(record)
    for name in _FLOATS:
        session[name] = float(record[name]) if record.get(name) else None
    for name in _INTS:
        session[name] = int(record.get(name) or 0)
    try:
        session["profile"] = json.loads(record.get("profile") or "{}")
    except ValueError:
        session["profile"] = {}
    session.setdefault("label", "")
    session.setdefault("proxy_url", "")
    return session  # type: ignore[return-value]  # the hash holds the fields SessionRecord names


def get_session(r: redis.Redis, session_id: str) -> SessionRecord | None:
    """The session record (raw proxy URL included: internal use only), or None."""
    if not session_id or len(session_id) > 64:
        return None
    record = r.hgetall(keys.session(session_id))
    return _parse(record) if record.get("id") else None


def list_sessions(r: redis.Redis, tenant: str | None = None) -> list[SessionRecord]:
    """Sessions of `tenant` (all when None), oldest first."""
    ids = r.smembers(tenant_sessions_key(tenant) if tenant else keys.SESSIONS_ALL)
    pipe = r.pipeline(transaction=False)
    for sid in ids:
        pipe.hgetall(keys.session(sid))
    found = [_parse(rec) for rec in pipe.execute() if rec.get("id")]
    return sorted(found, key=lambda s: (s["created_at"] or 0, s["id"]))


def is_sendable(session: SessionRecord, now: float | None = None) -> bool:
    """Connected, desired active, and its sending not paused."""
    now = time.time() if now is None else now
    return (session["status"] == "connected" and session.get("desired") == "active"
            and (session["paused_until"] or 0) <= now)


def paused_long(session: SessionRecord, now: float) -> bool:
    """Paused for longer than WAORCH_REROUTE_AFTER_PAUSE from `now`: its messages may go elsewhere."""
    return (session.get("paused_until") or 0) - now > settings.get().reroute_after_pause


def sendable_sessions(r: redis.Redis, tenant: str) -> list[SessionRecord]:
    """Connected, desired-active sessions of the tenant whose sending is not paused."""
    now = time.time()
    return [s for s in list_sessions(r, tenant) if is_sendable(s, now)]


def public_view(session: SessionRecord) -> dict:
    """What the API shows: proxy credentials redacted, no salt or secret."""
    url = session.get("proxy_url") or ""
    return {
        "id": session["id"], "tenant": session["tenant"], "phone": session["phone"],
        "status": session["status"], "desired": session.get("desired", "active"),
        "label": session.get("label", ""), "trust_level": session.get("trust_level", DEFAULT_TRUST),
        "proxy": {"id": proxy_id(url), "url": redact(url)} if url else None,
        "profile": session.get("profile") or {},
        "created_at": session.get("created_at"), "started_at": session.get("started_at"),
        "last_ping": session.get("last_ping"), "paused_until": session.get("paused_until"),
        "restarts": session.get("restarts", 0), "jid": session.get("jid") or None,
        "last_error": session.get("last_error") or None,
        "counters": {name: session.get(name, 0) for name in ("sent", "failed", "claimed")},
    }


def session_secret(session: SessionRecord) -> str:
    """The worker's webhook/outbox secret, derived (never stored)."""
    return signing.derive_secret(settings.get().secret_key,
                                 f"session:{session['id']}:{session['salt']}")


def worker_environment(session: SessionRecord, sessions_dir: str | None = None) -> dict[str, str]:
    """The environment of SPEC section 6 for this session's worker (both runners)."""
    conf = settings.get()
    base = conf.gateway_url.rstrip("/")
    return {
        "SESSION_ID": session["id"],
        "PHONE": session["phone"],
        "PROXY_URL": session.get("proxy_url") or "",
        "WEBHOOK_URL": f"{base}/api/webhook",
        "WEBHOOK_SECRET": session_secret(session),
        "ENABLE_KEEP_ALIVE": "true",
        "TRANSPORT": conf.transport,
        "SESSIONS_DIR": sessions_dir or str(sessions_root()),
        "PROFILE": json.dumps(session.get("profile") or {}, sort_keys=True),
        "SIM_WIRE": conf.sim_wire,
        "ORCHESTRATOR_URL": base,
        "PING_INTERVAL": str(conf.ping_interval),
        "SESSION_STORE": conf.session_store,
        # the device a PostgreSQL store resumes; the worker checks it is there before using it
        "DEVICE_JID": jid if session_store.parse_jid(jid := session.get("jid") or "") else "",
    }


# --- changing (always through Lua) -----------------------------------------------------------

def transition(r: redis.Redis, session_id: str, status: str = "", *, force: bool = False,
               desired: str = "", event: dict | None = None, qr: str | None = None,
               clear_qr: bool = False, count_restart: bool = False,
               fields: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """Apply one state change atomically; (old status, new status), None for an unknown session."""
    if status and status not in STATUSES:
        raise ValueError(f"unknown session status {status!r}")
    outcome, old, new = TRANSITION(
        r, session_id=session_id, status=status, now=f"{time.time():.3f}", force="1" if force else "0",
        desired=desired, event=json.dumps(event, sort_keys=True) if event else "", events_cap=EVENTS_CAP,
        qr_mode="set" if qr is not None else ("clear" if clear_qr else ""), qr=qr or "", qr_ttl=QR_TTL,
        count_restart="1" if count_restart else "0", fields=lua.pairs(fields or {}))
    if outcome == "missing":
        return None
    client_events.session_changed(r, session_id, old, new)
    return old, new


def record_ping(r: redis.Redis, session_id: str, connected: bool, counters: dict[str, int],
                record: dict) -> tuple[str, str] | None:
    """A worker's PING: last sign of life, connected or not, its counters; (old, new status)."""
    outcome, old, new = RECORD_PING(r, session_id=session_id, now=f"{time.time():.3f}",
                                    connected="1" if connected else "0",
                                    event=json.dumps(record, sort_keys=True), events_cap=EVENTS_CAP,
                                    counters=lua.pairs(counters))
    if outcome == "missing":
        return None
    client_events.session_changed(r, session_id, old, new)
    return old, new


def register(r: redis.Redis, session_id: str, tenant: str, phone: str, *, proxy_url: str,
             trust_level: str, label: str, profile: dict[str, Any]) -> str:
    """Record a new session (status starting, desired active); its id, or the phone's existing one."""
    created, found = CREATE(r, session_id=session_id, tenant=tenant, phone=phone, now=f"{time.time():.3f}",
                            status="starting", fields=lua.pairs({
                                "proxy_url": proxy_url, "trust_level": trust_level,
                                "salt": secrets.token_hex(16), "label": label[:200],
                                "profile": json.dumps(profile, sort_keys=True)}))
    if created != "ok":
        raise SessionExists(found)
    return session_id


def unregister(r: redis.Redis, session_id: str) -> str | None:
    """Forget the session and free its proxy slot (sticky mapping kept); its phone, None if unknown."""
    outcome, phone, _url = DELETE(r, session_id=session_id, proxy_ceiling=settings.get().proxy_ceiling)
    return phone if outcome == "ok" else None


def event_record(name: str, data: dict, at: float | None = None) -> dict:
    """An entry of the session's event history."""
    return {"event": name, "at": at if at is not None else time.time(), "data": data}


