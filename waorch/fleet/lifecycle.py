"""A session's life as the operator drives it: create, restart, stop, delete.

Each step changes the registry (waorch.sessions.registry), has the runner act
(waorch.runners.actions) and, where the session can no longer send, hands its unsent messages to
another sender (waorch.sending.rerouting). The low-level registry knows none of these.
"""

from __future__ import annotations

import logging
import secrets

import redis

from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.policy import rules as policy
from waorch.proxies.pool import ProxyPool, redact
from waorch.runners import actions as runner_actions
from waorch.sending import rerouting
from waorch.sessions import profiles
from waorch.sessions import registry as sessions
from waorch.sessions import store as session_store
from waorch.sessions.registry import SessionRecord

log = logging.getLogger(__name__)



class NoProxyCapacity(RuntimeError):
    """No OK proxy has a free slot for this phone (or its sticky proxy is full)."""


def create_session(r: redis.Redis, tenant: str, phone: str, trust_level: str | None = None,
                   label: str = "") -> SessionRecord:
    """Register a session for `phone` (E.164 digits) with its sticky proxy and profile, and start it."""
    trust = policy.get().check_level(trust_level) if trust_level else sessions.DEFAULT_TRUST
    existing = r.get(keys.session_by_phone(phone))
    if existing and r.exists(keys.session(existing)):
        raise sessions.SessionExists(existing)
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
        sessions.register(r, session_id, tenant, phone, proxy_url=url, trust_level=trust, label=label,
                          profile=profiles.assign(r, phone))
    except BaseException:
        pool.release(session_id, url)
        raise
    session = sessions.get_session(r, session_id)
    assert session is not None
    log.info("session %s created for tenant %s on proxy %s", session_id, tenant, redact(url))
    runner_actions.run(r, session, "start")
    check_inventory(r)
    return sessions.get_session(r, session_id) or session


def restart_session(r: redis.Redis, session_id: str, reason: str = "requested") -> SessionRecord | None:
    """Mark it desired-active and starting, and have the runner restart its worker (same proxy, same data)."""
    changed = sessions.transition(r, session_id, "starting", force=True, desired="active", clear_qr=True,
                                  count_restart=True,
                                  event=sessions.event_record("RESTART", {"reason": reason}))
    if changed is None:
        return None
    session = sessions.get_session(r, session_id)
    if session is not None:
        runner_actions.run(r, session, "restart")
    return sessions.get_session(r, session_id)


def stop_session(r: redis.Redis, session_id: str, status: str = "stopped", reason: str = "") -> bool:
    """Desired state stopped (the runner stops the worker); `status` records why."""
    changed = sessions.transition(r, session_id, status, force=True, desired="stopped",
                                  event=sessions.event_record("STOP", {"reason": reason}))
    if changed is None:
        return False
    after_change(r, session_id, changed)
    runner_actions.run(r, {"id": session_id}, "stop")
    if status == "stopped":
        # an operator's stop is not an incident: a session_down alert ends here
        alert_events.resolve(r, alert_events.SESSION_DOWN, session_id,
                             f"session {session_id} was stopped on request")
    return True


def delete_session(r: redis.Redis, session_id: str) -> bool:
    """Forget the session, free its proxy slot (sticky mapping kept), remove its worker; its data
    directory stays, its device in a PostgreSQL session store goes once the worker is gone."""
    session = sessions.get_session(r, session_id)
    phone = sessions.unregister(r, session_id)
    if phone is None:
        return False
    if session is not None:
        session_store.forget_later(r, session)
    rerouting.after_session_deleted(r, session_id, phone)  # its unsent messages go elsewhere
    runner_actions.run(r, {"id": session_id}, "remove")
    alert_events.resolve(r, alert_events.SESSION_DOWN, session_id, f"session {session_id} deleted")
    return True


def after_change(r: redis.Redis, session_id: str, changed: tuple[str, str] | None,
                 paused: bool = False) -> None:
    """After a status change or a new pause: a session that can no longer send hands its messages on."""
    if changed is None:
        return
    old, new = changed
    if (new != old and new in sessions.DEAD_STATUSES) or paused:
        rerouting.after_session_change(r, session_id)


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
