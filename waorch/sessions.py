"""The session registry: one HASH per session in Redis, changed only through Lua scripts.

Statuses: starting, pairing, connected, disconnected, error, banned, logged_out, stopped.
Desired state is membership of `sessions:active`; runners and the watchdog converge on it.
Own keys besides SPEC section 8: sessions:tenant:<tenant> (SET), session:by_phone:<phone>.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

import redis

from waorch import alert_events, client_events, keys, lua, profiles, settings, signing
from waorch.proxies import ProxyPool, proxy_id, redact

log = logging.getLogger("waorch.sessions")

STATUSES = ("starting", "pairing", "connected", "disconnected", "error", "banned", "logged_out",
            "stopped")
# Sessions in these states will not send again without an operator (their messages are rerouted).
DEAD_STATUSES = frozenset({"banned", "logged_out", "stopped"})
EVENTS_CAP = 200
QR_TTL = 180  # a QR is only useful for a minute or two; an old one must not linger
DEFAULT_PAUSE = 3600.0  # RESTRICTED without an `until`: pause this long
DEFAULT_TRUST = "new"
_TRUST = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FLOATS = ("created_at", "started_at", "last_ping", "paused_until", "status_at", "connected_at")
_INTS = ("restarts", "sent", "failed", "claimed")


class NoProxyCapacity(RuntimeError):
    """No OK proxy has a free slot for this phone (or its sticky proxy is full)."""


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

def _parse(record: dict[str, str]) -> dict[str, Any]:
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
    return session


def get_session(r: redis.Redis, session_id: str) -> dict | None:
    """The session record (raw proxy URL included: internal use only), or None."""
    if not session_id or len(session_id) > 64:
        return None
    record = r.hgetall(keys.session(session_id))
    return _parse(record) if record.get("id") else None


def list_sessions(r: redis.Redis, tenant: str | None = None) -> list[dict]:
    """Sessions of `tenant` (all when None), oldest first."""
    ids = r.smembers(tenant_sessions_key(tenant) if tenant else keys.SESSIONS_ALL)
    pipe = r.pipeline(transaction=False)
    for sid in ids:
        pipe.hgetall(keys.session(sid))
    found = [_parse(rec) for rec in pipe.execute() if rec.get("id")]
    return sorted(found, key=lambda s: (s["created_at"] or 0, s["id"]))


def is_sendable(session: dict, now: float | None = None) -> bool:
    """Connected, desired active, and its sending not paused."""
    now = time.time() if now is None else now
    return (session["status"] == "connected" and session.get("desired") == "active"
            and (session["paused_until"] or 0) <= now)


def paused_long(session: dict, now: float) -> bool:
    """Paused for longer than WAORCH_REROUTE_AFTER_PAUSE from `now`: its messages may go elsewhere."""
    return (session.get("paused_until") or 0) - now > settings.get().reroute_after_pause


def sendable_sessions(r: redis.Redis, tenant: str) -> list[dict]:
    """Connected, desired-active sessions of the tenant whose sending is not paused."""
    now = time.time()
    return [s for s in list_sessions(r, tenant) if is_sendable(s, now)]


def public_view(session: dict) -> dict:
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


def session_secret(session: dict) -> str:
    """The worker's webhook/outbox secret, derived (never stored)."""
    return signing.derive_secret(settings.get().secret_key,
                                 f"session:{session['id']}:{session['salt']}")


def worker_environment(session: dict, sessions_dir: str | None = None) -> dict[str, str]:
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
    }


# --- changing (always through Lua) -----------------------------------------------------------

def transition(r: redis.Redis, session_id: str, status: str = "", *, force: bool = False,
               desired: str = "", event: dict | None = None, qr: str | None = None,
               clear_qr: bool = False, count_restart: bool = False,
               fields: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """Apply one state change atomically; (old status, new status), None for an unknown session."""
    if status and status not in STATUSES:
        raise ValueError(f"unknown session status {status!r}")
    flat: list[str] = []
    for name, value in (fields or {}).items():
        flat += [name, "" if value is None else str(value)]
    qr_mode = "set" if qr is not None else ("clear" if clear_qr else "")
    outcome, old, new = lua.script(r, "session_transition")(args=[
        session_id, status, f"{time.time():.3f}", "1" if force else "0", desired,
        json.dumps(event, sort_keys=True) if event else "", EVENTS_CAP, qr_mode, qr or "", QR_TTL,
        "1" if count_restart else "0", *flat])
    if outcome == "missing":
        return None
    client_events.session_changed(r, session_id, old, new)
    if (new != old and new in DEAD_STATUSES) or "paused_until" in (fields or {}):
        from waorch import rerouting  # noqa: PLC0415  (import cycle)

        rerouting.after_session_change(r, session_id)  # its messages go to another sender
    return old, new


def create_session(r: redis.Redis, tenant: str, phone: str, trust_level: str | None = None,
                   label: str = "") -> dict:
    """Register a session for `phone` (E.164 digits) with its sticky proxy and profile, and start it."""
    trust = trust_level or DEFAULT_TRUST
    if not _TRUST.match(trust):
        raise ValueError("trust_level must be a short lowercase name")
    existing = r.get(keys.session_by_phone(phone))
    if existing and r.exists(keys.session(existing)):
        raise SessionExists(existing)
    session_id = secrets.token_hex(6)
    pool = ProxyPool(r)
    outcome, url = pool.allocate(session_id, phone)
    if outcome != "ok":
        check_inventory(r)
        if outcome == "full":
            raise NoProxyCapacity("no proxy capacity: this phone's sticky proxy is full "
                                  "(its IP is kept; free a slot on it or wait for it to go BAD)")
        raise NoProxyCapacity("no proxy capacity: add proxies (each takes "
                              f"{pool.ceiling} sessions) before creating sessions")
    try:
        profile = profiles.assign(r, phone)
        now = f"{time.time():.3f}"
        created, found = lua.script(r, "session_create")(args=[
            session_id, tenant, phone, now, "starting",
            "proxy_url", url, "trust_level", trust, "salt", secrets.token_hex(16),
            "label", label[:200], "profile", json.dumps(profile, sort_keys=True)])
    except BaseException:
        pool.release(session_id, url)
        raise
    if created != "ok":
        pool.release(session_id, url)
        raise SessionExists(found)
    session = get_session(r, session_id)
    assert session is not None
    log.info("session %s created for tenant %s on proxy %s", session_id, tenant, redact(url))
    _run(r, session, "start")
    check_inventory(r)
    return get_session(r, session_id) or session


def restart_session(r: redis.Redis, session_id: str, reason: str = "requested") -> dict | None:
    """Mark it desired-active and starting, and have the runner restart its worker (same proxy, same data)."""
    changed = transition(r, session_id, "starting", force=True, desired="active", clear_qr=True,
                         count_restart=True, event=_event("RESTART", {"reason": reason}))
    if changed is None:
        return None
    session = get_session(r, session_id)
    if session is not None:
        _run(r, session, "restart")
    return get_session(r, session_id)


def stop_session(r: redis.Redis, session_id: str, status: str = "stopped", reason: str = "") -> bool:
    """Desired state stopped (the runner stops the worker); `status` records why."""
    changed = transition(r, session_id, status, force=True, desired="stopped",
                         event=_event("STOP", {"reason": reason}))
    if changed is None:
        return False
    _run(r, {"id": session_id}, "stop")
    if status == "stopped":
        # an operator's stop is not an incident: a session_down alert ends here
        alert_events.resolve(r, alert_events.SESSION_DOWN, session_id,
                             f"session {session_id} was stopped on request")
    return True


def delete_session(r: redis.Redis, session_id: str) -> bool:
    """Forget the session, free its proxy slot (sticky mapping kept), remove its worker; data stays."""
    outcome, phone, _url = lua.script(r, "session_delete")(args=[session_id, settings.get().proxy_ceiling])
    if outcome != "ok":
        return False
    from waorch import rerouting  # noqa: PLC0415  (import cycle)

    rerouting.after_session_deleted(r, session_id, phone)  # its unsent messages go elsewhere
    _run(r, {"id": session_id}, "remove")
    alert_events.resolve(r, alert_events.SESSION_DOWN, session_id, f"session {session_id} deleted")
    return True


def _run(r: redis.Redis, session: dict, action: str) -> bool:
    """Have the runner act: here, or through the `orchestrator` queue (WAORCH_RUNNER_ACTIONS=queue)."""
    from waorch import runner_actions  # noqa: PLC0415  (import cycle)

    if runner_actions.mode() == "queue":
        return runner_actions.publish(r, session["id"], action)
    return run_locally(r, session, action)


def run_locally(r: redis.Redis, session: dict, action: str) -> bool:
    """Ask the runner to act in this process; a runner that is down is recorded (watchdog retries)."""
    from waorch.runners import RunnerUnavailable, get_runner  # noqa: PLC0415  (import cycle)

    runner = get_runner()
    try:
        if action == "remove":
            runner.remove(session["id"])
        elif action == "stop":
            runner.stop(session["id"])
        else:
            getattr(runner, action)(session)
        return True
    except RunnerUnavailable as exc:
        log.warning("runner could not %s session %s: %s", action, session["id"], exc)
        if action in ("start", "restart"):
            transition(r, session["id"], fields={"last_error": f"runner unavailable: {exc}"[:300]})
        return False


def _event(name: str, data: dict, at: float | None = None) -> dict:
    return {"event": name, "at": at if at is not None else time.time(), "data": data}


def check_inventory(r: redis.Redis) -> None:
    """Raise or resolve the low-inventory alerts (free proxy slots, free profile slots)."""
    threshold = settings.get().low_inventory
    for subject, what, free in (("proxies", "proxy", ProxyPool(r).free_slots()),
                                ("profiles", "device profile", profiles.free_slots(r))):
        if free < threshold:
            alert_events.raise_alert(r, alert_events.LOW_INVENTORY, subject,
                                     f"only {free} free {what} slots left", data={"free": free})
        else:
            alert_events.resolve(r, alert_events.LOW_INVENTORY, subject, f"{free} free {what} slots again")


# --- worker events -----------------------------------------------------------------------------

_ERROR_STATUS = {"BANNED": "banned", "LOGGED_OUT": "logged_out"}
_SECRET_DATA = ("qr", "code")  # login material: kept out of the event history


def apply_worker_event(r: redis.Redis, session_id: str, event: str, data: dict, at: float) -> tuple | None:
    """Apply a verified worker event to the registry; (old status, new status) or None if unknown."""
    data = data if isinstance(data, dict) else {}
    record = _event(event, {k: v for k, v in data.items() if k not in _SECRET_DATA}, at)
    if event == "PING":
        return _ping(r, session_id, data, record)
    if event == "QR":
        return transition(r, session_id, "pairing", event=record, qr=str(data.get("qr", ""))[:4096])
    if event == "PAIR_CODE":
        return transition(r, session_id, "pairing", event=record,
                          fields={"pair_code": str(data.get("code", ""))[:32]})
    if event == "CONNECTED":
        changed = transition(r, session_id, "connected", event=record, clear_qr=True, fields={
            "jid": str(data.get("jid", ""))[:128], "connected_at": at, "last_error": "",
            "pair_code": "", "last_ping": at})
        if changed:
            alert_events.resolve(r, alert_events.SESSION_DOWN, session_id,
                                 f"session {session_id} connected again")
        return changed
    if event == "ERROR":
        return _error(r, session_id, data, record)
    if event == "STOPPING":
        session = get_session(r, session_id)
        status = "stopped" if session and session.get("desired") == "stopped" else "disconnected"
        return transition(r, session_id, status, event=record)
    if event == "RESTRICTED":
        return _restricted(r, session_id, data, record, at)
    return transition(r, session_id, event=record)


def _ping(r: redis.Redis, session_id: str, data: dict, record: dict) -> tuple | None:
    counters: list[str] = []
    for name in ("sent", "failed", "claimed", "uptime", "pid"):
        value = data.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            counters += [name, str(int(value))]
    outcome, old, new = lua.script(r, "session_ping")(args=[
        session_id, f"{time.time():.3f}", "1" if data.get("connected") else "0",
        json.dumps(record, sort_keys=True), EVENTS_CAP, *counters])
    if outcome == "missing":
        return None
    client_events.session_changed(r, session_id, old, new)
    return old, new


def _error(r: redis.Redis, session_id: str, data: dict, record: dict) -> tuple | None:
    code = str(data.get("code") or "UNKNOWN")[:64]
    detail = str(data.get("detail") or "")[:300]
    status = _ERROR_STATUS.get(code, "error")
    # A banned account needs a person (appeal), not a restart loop. A logged-out one keeps its
    # worker: it pairs again, and its QR is what the person needs to see.
    desired = "stopped" if code == "BANNED" else ""
    changed = transition(r, session_id, status, event=record, desired=desired,
                         fields={"last_error": f"{code}: {detail}" if detail else code})
    if changed is None:
        return None
    if code in _ERROR_STATUS:
        alert_events.raise_alert(r, alert_events.SESSION_DOWN, session_id,
                                 f"session {session_id} is {status.replace('_', ' ')}",
                                 severity="critical", data={"code": code})
    if code == "PROXY_FAILED":
        session = get_session(r, session_id)
        if session and session.get("proxy_url"):
            from waorch import proxy_health  # noqa: PLC0415  (import cycle)

            proxy_health.worker_evidence(r, session["proxy_url"], detail or code)
    return changed


def _restricted(r: redis.Redis, session_id: str, data: dict, record: dict, at: float) -> tuple | None:
    until = data.get("until")
    until = float(until) if isinstance(until, int | float) and until > at else at + DEFAULT_PAUSE
    session = get_session(r, session_id)
    if session is None:
        return None
    fields: dict[str, Any] = {"paused_until": f"{until:.3f}",
                              "restriction": str(data.get("reason") or "")[:200]}
    if session.get("trust_level") != "restricted":
        # WhatsApp's own warning: slow down for good, not just until the pause ends.
        fields.update({"trust_level": "restricted", "trust_before_restriction": session.get("trust_level")})
    changed = transition(r, session_id, event=record, fields=fields)
    alert_events.raise_alert(r, alert_events.SESSION_RESTRICTED, session_id,
                             f"WhatsApp restricted session {session_id}; sending paused",
                             data={"until": until, "reason": data.get("reason")})
    return changed
