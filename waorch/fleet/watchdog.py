"""The watchdog: converge what runs (the runner's view) on what should run (`sessions:active`).

Every round: desired sessions whose worker is gone are started, sessions whose PINGs stopped for
WAORCH_PING_TIMEOUT are restarted (same proxy, same data), workers without a desired session are
removed, sessions stranded on a BAD or removed proxy are moved, and stale proxy slots are freed.
The silent ones come from sessions:last_ping (kept by the session scripts), and the ones to start
from the desired set minus what the runner reports: a round reads only those sessions' records.
"""

from __future__ import annotations

import logging
import time

import redis

from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.fleet import lifecycle, proxy_failover
from waorch.proxies.pool import ProxyPool, proxy_id, proxy_sessions_key
from waorch.runners import ALIVE, Runner, RunnerUnavailable, get_runner
from waorch.sending import dispatch as dispatching
from waorch.sessions import registry as sessions
from waorch.sessions import store as session_store

log = logging.getLogger(__name__)


def reconcile(r: redis.Redis, runner: Runner | None = None, now: float | None = None) -> dict:
    """One watchdog round; returns what it did (session ids per action)."""
    runner = runner or get_runner()
    now = time.time() if now is None else now
    timeout = settings.get().ping_timeout
    report: dict = {"started": [], "restarted": [], "removed": [], "relocated": [], "released": []}
    # Registry housekeeping does not need the runner.
    report["released"] = _release_stale_slots(r)
    report["relocated"] = _relocate_stranded(r)
    _resolve_ended_restrictions(r, now)
    _resolve_recovered(r, now, timeout)
    # free slots also change when sessions are deleted or proxies go BAD: the alert follows here
    lifecycle.check_inventory(r)
    dispatching.ensure_indexes(r)  # sessions:last_ping of sessions from before it
    desired = r.smembers(keys.SESSIONS_ACTIVE)
    try:
        actual = runner.list()
    except RunnerUnavailable as exc:
        log.warning("watchdog: runner unavailable: %s", exc)
        for session_id in sorted(desired):
            _report_unstartable(r, sessions.get_session(r, session_id), f"runner unavailable: {exc}",
                                now, timeout)
        return {**report, "error": str(exc)}

    alive = {sid for sid, state in actual.items() if state in ALIVE}
    for session_id in sorted(desired - alive):
        session = sessions.get_session(r, session_id)
        if session is None:
            continue
        error = _act(runner.start, session, report["started"])
        if error:
            sessions.transition(r, session_id, fields={"last_error": error[:300]})
            _report_unstartable(r, session, error, now, timeout)

    for session_id in sorted(set(silent_sessions(r, now - timeout)) & desired & alive):
        session = sessions.get_session(r, session_id)
        if session is None:
            continue
        last_sign = max(session["last_ping"] or 0, session["started_at"] or 0)
        if now - last_sign > timeout:
            log.warning("session %s sent no PING for %.0fs: restarting", session_id, now - last_sign)
            alert_events.raise_alert(r, alert_events.SESSION_DOWN, session_id,
                                     f"session {session_id} stopped answering; restarting it",
                                     data={"silent_for": round(now - last_sign)})
            if lifecycle.restart_session(r, session_id, reason=f"no PING for {now - last_sign:.0f}s"):
                report["restarted"].append(session_id)

    for session_id in sorted(set(actual) - desired):
        try:
            runner.remove(session_id)
            report["removed"].append(session_id)
        except RunnerUnavailable as exc:
            log.warning("watchdog could not remove orphan %s: %s", session_id, exc)
    # deleted sessions' devices leave a PostgreSQL store once their worker is gone
    report["forgotten"] = session_store.forget_due(
        r, {sid for sid, state in actual.items() if state in ALIVE}, now)

    return report


def silent_sessions(r: redis.Redis, since: float) -> list[str]:
    """Desired sessions with no sign of life (PING, start, restart) since `since` (sessions:last_ping)."""
    return r.zrangebyscore(keys.SESSIONS_LAST_PING, "-inf", f"({since:.3f}")


def _act(action, session: dict, done: list[str]) -> str | None:
    """Run the runner action; the error text when the runner could not do it."""
    try:
        action(session)
        done.append(session["id"])
        return None
    except RunnerUnavailable as exc:
        log.warning("watchdog could not start session %s: %s", session["id"], exc)
        return f"runner unavailable: {exc}"


def _report_unstartable(r: redis.Redis, session: dict | None, error: str, now: float,
                        timeout: float) -> None:
    """A wanted worker the runner cannot start is down like a crash loop, after the same grace
    (no PING and no start for WAORCH_PING_TIMEOUT); CONNECTED or fresh PINGs resolve it."""
    if session is None:
        return
    last_sign = max(session["last_ping"] or 0, session["started_at"] or 0)
    if now - last_sign <= timeout:
        return
    alert_events.raise_alert(r, alert_events.SESSION_DOWN, session["id"],
                             f"session {session['id']} cannot be started: {error}"[:500],
                             severity="critical", data={"silent_for": round(now - last_sign)})


def _relocate_stranded(r: redis.Redis) -> list[str]:
    """Sessions whose proxy is BAD or gone (an earlier move found no capacity) try again."""
    pool = ProxyPool(r)
    known = set(pool.urls())
    stranded = {s["proxy_url"] for s in sessions.list_sessions(r)
                if s.get("desired") == "active" and s.get("proxy_url")
                and (s["proxy_url"] not in known or r.get(keys.proxy_status(s["proxy_url"])) != "OK")}
    moved: list[str] = []
    for url in sorted(stranded):
        moved += proxy_failover.relocate_sessions(r, url, "proxy BAD or removed")["moved"]
    return moved


def _release_stale_slots(r: redis.Redis) -> list[str]:
    """Slots held by sessions that no longer exist (a crash between two steps) are freed."""
    pool = ProxyPool(r)
    released = []
    for url in pool.urls():
        for session_id in r.smembers(proxy_sessions_key(url)):
            if not r.exists(keys.session(session_id)):
                pool.release(session_id, url)
                released.append(session_id)
    return released


def _resolve_ended_restrictions(r: redis.Redis, now: float) -> None:
    for alert in alert_events.active_alerts(r):
        if alert["kind"] == alert_events.SESSION_RESTRICTED and (alert["data"].get("until") or 0) <= now:
            alert_events.resolve(r, alert_events.SESSION_RESTRICTED, alert["subject"],
                                 f"session {alert['subject']} may send again")


def _resolve_recovered(r: redis.Redis, now: float, timeout: float) -> None:
    """Recovery paths no single event covers: a session PINGing connected again without a
    CONNECTED event, a session or a burned proxy that no longer exists, a BAD proxy now OK."""
    proxies = None
    for alert in alert_events.active_alerts(r):
        subject = alert["subject"]
        if alert["kind"] == alert_events.SESSION_DOWN:
            session = sessions.get_session(r, subject)
            if session is None:
                alert_events.resolve(r, alert_events.SESSION_DOWN, subject, f"session {subject} is gone")
            elif session["status"] == "connected" and now - (session["last_ping"] or 0) <= timeout:
                alert_events.resolve(r, alert_events.SESSION_DOWN, subject,
                                     f"session {subject} connected again")
            elif session.get("desired") == "stopped" and session["status"] == "stopped":
                # stopped on request (a ban stops it too, but keeps the status `banned`)
                alert_events.resolve(r, alert_events.SESSION_DOWN, subject,
                                     f"session {subject} was stopped on request")
        elif alert["kind"] == alert_events.PROXY_BURNED:
            if proxies is None:
                proxies = {proxy_id(url): url for url in ProxyPool(r).urls()}
            url = proxies.get(subject)
            if url is None:
                alert_events.resolve(r, alert_events.PROXY_BURNED, subject,
                                     f"proxy {subject} was removed from the inventory")
            elif r.get(keys.proxy_status(url)) == "OK":
                alert_events.resolve(r, alert_events.PROXY_BURNED, subject, f"proxy {subject} is OK again")
