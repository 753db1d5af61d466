"""Burst detection: on demand (far more queued work than the budget) and on the send log.

Either puts the session into cooldown (decided in Lua: policy/judge_demand.lua, policy/judge_send_log.lua),
raises a `burst_detected` alert and records a session event; a send burst also demotes the
session one trust rung when the policy says so. The alert resolves when the cooldown is over.
"""

from __future__ import annotations

import logging
import math
import time

import redis

from waorch.alerts import events as alert_events
from waorch.core import keys, lua
from waorch.policy import rules as policy
from waorch.policy import trust
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

JUDGE_DEMAND = lua.Script("policy/judge_demand", keys=("queue", "outbox", "leases", "pacing"),
                          args=("now", "threshold", "cooldown", "session_id"))
JUDGE_SEND_LOG = lua.Script("policy/judge_send_log", keys=("sent", "pacing"),
                            args=("now", "sent_at", "msg_id", "window", "allowed", "cooldown", "session_id"))


def _subject(session_id: str, source: str) -> str:
    return f"{session_id}:{source}"


def _raise(r: redis.Redis, session: dict, source: str, message: str, until: float,
           data: dict) -> None:
    sid = session["id"]
    alert_events.raise_alert(r, alert_events.BURST_DETECTED, _subject(sid, source), message,
                             data={"session": sid, "source": source, "cooldown_until": until, **data})
    sessions.transition(r, sid, event={"event": "BURST", "at": time.time(),
                                       "data": {"source": source, "message": message,
                                                "cooldown_until": until, **data}})


def demand_threshold(pol: policy.Policy, level: policy.TrustLevel) -> int:
    """Pending messages above which a session of `level` is in a demand burst."""
    return math.floor(pol.bursts.demand_factor * level.per_day)


def check_demand(r: redis.Redis, session: dict, now: float | None = None) -> str:
    """After routing work to `session`: a demand burst when pending work exceeds its budget."""
    now = time.time() if now is None else now
    pol = policy.get()
    threshold = demand_threshold(pol, pol.level(session.get("trust_level")))
    outcome, pending, until = JUDGE_DEMAND(
        r, queue=keys.session_queue(session["phone"]), outbox=keys.session_outbox(session["id"]),
        leases=keys.session_leases(session["id"]), pacing=keys.session_pacing(session["id"]),
        now=f"{now:.6f}", threshold=threshold, cooldown=pol.bursts.cooldown_demand, session_id=session["id"])
    if outcome == "burst":
        report_demand_burst(r, session, int(pending), float(until))
    return outcome


def report_demand_burst(r: redis.Redis, session: dict, pending: int, until: float) -> None:
    """Alert and session event for a demand burst the Lua judge found (cooldown already set)."""
    pol = policy.get()
    level = pol.level(session.get("trust_level"))
    message = (f"burst detected: {pending} messages queued for session {session['id']}, whose "
               f"{level.name} budget is {level.per_day}/day; cooling down")
    _raise(r, session, "demand", message, until, {"pending": pending,
                                                   "threshold": demand_threshold(pol, level)})


def after_send(r: redis.Redis, session_id: str, msg_id: str, sent_at: float,
               now: float | None = None) -> str:
    """A send was acknowledged: count it for the trust review and judge the send log."""
    now = time.time() if now is None else now
    trust.note_send(r, session_id, True, sent_at)
    session = sessions.get_session(r, session_id)
    if session is None:
        return "unknown"
    pol = policy.get()
    level = pol.level(session.get("trust_level"))
    window = pol.bursts.send_window
    allowed = max(1, math.floor(pol.bursts.send_factor * level.per_minute * window / 60))
    outcome, count, until = JUDGE_SEND_LOG(
        r, sent=keys.session_sent(session_id), pacing=keys.session_pacing(session_id), now=f"{now:.6f}",
        sent_at=f"{sent_at:.6f}", msg_id=msg_id, window=window, allowed=allowed,
        cooldown=pol.bursts.cooldown_send, session_id=session_id)
    if outcome == "burst":
        message = (f"burst detected: session {session_id} sent {count} messages in "
                   f"{window:g} s ({level.name} allows {allowed}); cooling down")
        _raise(r, session, "send", message, float(until), {"sent": int(count), "allowed": allowed})
        if pol.trust_review.demote_on_burst:
            trust.demote(r, session_id, f"send burst: {count} sends in {window:g} s", now=now)
    return outcome


def resolve_finished(r: redis.Redis, now: float | None = None) -> int:
    """Resolve burst alerts whose session is out of cooldown (or gone); returns how many."""
    now = time.time() if now is None else now
    resolved = 0
    for alert in alert_events.active_alerts(r):
        if alert["kind"] != alert_events.BURST_DETECTED:
            continue
        sid, _, source = alert["subject"].partition(":")
        cooldown = r.hget(keys.session_pacing(sid), "cooldown_until")
        if cooldown and float(cooldown) > now and r.exists(keys.session(sid)):
            continue
        if alert_events.resolve(r, alert_events.BURST_DETECTED, alert["subject"],
                                f"session {sid} is out of its {source} burst cooldown"):
            resolved += 1
    return resolved
