"""Trust levels of sessions: changes by operators and by the hourly review, each with its reason.

The review promotes one rung at a time (account age, sends, failure rate, days without incident
at the current level) and demotes one rung on a high failure rate or a ban of a session on the
same proxy; bursts demote at once (waorch.policy.bursts), WhatsApp restrictions put the session on the
`restricted` level (waorch.sessions.registry). Own keys: session:trust:<id> HASH (changed_at,
last_incident_at, last_incident, sent_total, sent:<YYYYMMDDHH>, failed:<YYYYMMDDHH>,
seen_ban:<session>), session:trust:events:<id> capped LIST of JSON changes, newest first.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from waorch.core import keys, lua
from waorch.policy import rules as policy
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

SET_TRUST_LEVEL = lua.Script("policy/set_trust_level",
                             args=("session_id", "level", "expect", "now", "event", "events_cap", "change",
                                   "history_cap", "incident"))

HISTORY_CAP = 100
STATS_DAYS = 31  # hourly send/failure buckets kept this long
NEIGHBOUR_BAN_DAYS = 7  # a neighbour's ban older than this is not news


def _hour(at: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(at))


# --- changing levels -----------------------------------------------------------------------------

def set_level(r: redis.Redis, session_id: str, level: str, reason: str, by: str = "operator",
              expect: str | None = None, incident: bool = False,
              now: float | None = None) -> dict[str, Any] | None:
    """Move the session to `level` (ValueError if the policy has no such level).

    Returns the change, or None when nothing changed (unknown session, already there, or its
    level was no longer `expect`).
    """
    policy.get().check_level(level)
    now = time.time() if now is None else now
    for _ in range(3):
        session = sessions.get_session(r, session_id)
        if session is None:
            return None
        old = session.get("trust_level") or ""
        if expect is not None and old != expect:
            return None
        change = {"session": session_id, "from": old, "to": level, "reason": reason[:300],
                  "by": by, "at": now}
        event = {"event": "TRUST", "at": now, "data": {k: change[k] for k in ("from", "to", "reason", "by")}}
        outcome, _current = SET_TRUST_LEVEL(
            r, session_id=session_id, level=level, expect=old, now=f"{now:.3f}",
            event=json.dumps(event, sort_keys=True), events_cap=sessions.EVENTS_CAP,
            change=json.dumps(change, sort_keys=True), history_cap=HISTORY_CAP,
            incident="1" if incident else "0")
        if outcome == "ok":
            log.info("session %s trust %s -> %s (%s, by %s)", session_id, old, level, reason, by)
            if incident:
                r.hset(keys.session_trust(session_id), "last_incident", reason[:300])
            return change
        if outcome != "conflict":
            return None
    return None


def step(r: redis.Redis, session_id: str, steps: int, reason: str, by: str = "policy",
         incident: bool = False, now: float | None = None) -> dict[str, Any] | None:
    """One (or more) rungs up or down the policy's ladder from the current level; None at the end."""
    session = sessions.get_session(r, session_id)
    if session is None:
        return None
    current = session.get("trust_level") or ""
    target = policy.get().rung(current, steps)
    if target is None or target == current:
        if incident:
            record_incident(r, session_id, reason, now)
        return None
    return set_level(r, session_id, target, reason, by=by, expect=current, incident=incident, now=now)


def demote(r: redis.Redis, session_id: str, reason: str, by: str = "policy",
           now: float | None = None) -> dict[str, Any] | None:
    """One rung down, recorded as an incident (which also resets the clean-record clock)."""
    return step(r, session_id, -1, reason, by=by, incident=True, now=now)


def record_incident(r: redis.Redis, session_id: str, reason: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    r.hset(keys.session_trust(session_id),
           mapping={"last_incident_at": f"{now:.3f}", "last_incident": reason[:300]})


def note_restricted(r: redis.Redis, session_id: str, before: str, reason: str, until: float | None,
                    now: float | None = None) -> None:
    """WhatsApp restricted the session (sessions.py moved it to `restricted`): history + incident."""
    now = time.time() if now is None else now
    text = f"WhatsApp restriction{': ' + reason if reason else ''}; sending paused"
    change = {"session": session_id, "from": before, "to": "restricted", "reason": text[:300],
              "by": "whatsapp", "at": now, "paused_until": until}
    pipe = r.pipeline(transaction=True)
    pipe.lpush(keys.session_trust_history(session_id), json.dumps(change, sort_keys=True))
    pipe.ltrim(keys.session_trust_history(session_id), 0, HISTORY_CAP - 1)
    pipe.hset(keys.session_trust(session_id), mapping={"changed_at": f"{now:.3f}",
                                              "last_incident_at": f"{now:.3f}",
                                              "last_incident": text[:300]})
    pipe.execute()


def history(r: redis.Redis, session_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """Recent trust changes of the session, newest first."""
    return [json.loads(x) for x in r.lrange(keys.session_trust_history(session_id), 0, max(0, limit - 1))]


# --- send statistics -----------------------------------------------------------------------------

def note_send(r: redis.Redis, session_id: str, ok: bool, at: float | None = None) -> None:
    """Count a send (ACK) or a failed attempt (NACK) for the review's failure rate."""
    at = time.time() if at is None else at
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(keys.session_trust(session_id), f"{'sent' if ok else 'failed'}:{_hour(at)}", 1)
    if ok:
        pipe.hincrby(keys.session_trust(session_id), "sent_total", 1)
    pipe.execute()


def send_stats(stats: dict[str, str], now: float, hours: float) -> tuple[int, int]:
    """(sent, failed) in the last `hours` from the hourly buckets of session:trust:<id>."""
    oldest = _hour(now - hours * 3600)
    sent = failed = 0
    for name, value in stats.items():
        kind, _, hour = name.partition(":")
        if kind in ("sent", "failed") and hour.isdigit() and hour >= oldest:
            if kind == "sent":
                sent += int(value)
            else:
                failed += int(value)
    return sent, failed


def _prune(r: redis.Redis, session_id: str, stats: dict[str, str], now: float) -> None:
    oldest = _hour(now - STATS_DAYS * 86400)
    stale = [n for n in stats if n.partition(":")[0] in ("sent", "failed")
             and n.partition(":")[2] < oldest]
    if stale:
        r.hdel(keys.session_trust(session_id), *stale)


# --- the review ----------------------------------------------------------------------------------

def _neighbour_bans(r: redis.Redis, session: dict, everyone: list[dict], now: float) -> list[dict]:
    """Sessions on the same proxy banned recently, that this session has not been demoted for."""
    url = session.get("proxy_url")
    if not url:
        return []
    since = max(session.get("created_at") or 0, now - NEIGHBOUR_BAN_DAYS * 86400)
    found = []
    for other in everyone:
        if other["id"] == session["id"] or other.get("proxy_url") != url:
            continue
        recent_ban = other.get("status") == "banned" and (other.get("status_at") or 0) >= since
        seen_key = f"seen_ban:{other['id']}"
        if recent_ban and r.hsetnx(keys.session_trust(session["id"]), seen_key, f"{now:.3f}"):
            found.append(other)
    return found


def review_session(r: redis.Redis, session: dict, everyone: list[dict], pol: policy.Policy,
                   now: float) -> dict[str, Any] | None:
    """At most one change for one session: demotion first, else promotion when it has earned it."""
    sid = session["id"]
    rules = pol.trust_review
    if rules.demote_on_neighbour_ban:
        for other in _neighbour_bans(r, session, everyone, now):
            return demote(r, sid, f"session {other['id']} on the same proxy was banned", by="review",
                          now=now)
    stats = r.hgetall(keys.session_trust(sid))
    _prune(r, sid, stats, now)
    sent, failed = send_stats(stats, now, rules.demote_window_hours)
    attempts = sent + failed
    if attempts >= rules.demote_min_attempts and failed / attempts > rules.demote_failure_rate:
        return demote(r, sid, f"{failed} of {attempts} sends failed in the last "
                              f"{rules.demote_window_hours:g} h", by="review", now=now)
    level = session.get("trust_level") or ""
    target = pol.rung(level if level in pol.trust_levels else None, +1)
    rule = rules.promote.get(target or "")
    if target is None or rule is None:
        return None
    age_days = (now - (session.get("created_at") or now)) / 86400
    settled = max(float(stats.get("last_incident_at") or 0), float(stats.get("changed_at") or 0),
                  session.get("created_at") or 0)
    clean_days = (now - settled) / 86400
    rate = failed / attempts if attempts else 0.0
    total = int(stats.get("sent_total") or 0)
    if age_days < rule.min_age_days or total < rule.min_sent or rate > rule.max_failure_rate \
            or clean_days < rule.clean_days:
        return None
    reason = (f"account {age_days:.0f} d old, {total} sends, {rate:.0%} failed in "
              f"{rules.demote_window_hours:g} h, {clean_days:.1f} d without incident at {level or '?'}")
    return set_level(r, sid, target, reason, by="review", expect=session.get("trust_level") or "",
                     now=now)


def review(r: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """The hourly trust review of every live session; returns the changes made."""
    now = time.time() if now is None else now
    pol = policy.get()
    everyone = sessions.list_sessions(r, None)
    changes = []
    for session in everyone:
        if session.get("status") in sessions.DEAD_STATUSES:
            continue
        try:
            change = review_session(r, session, everyone, pol, now)
        except (redis.RedisError, ValueError):
            log.exception("trust review of session %s failed", session["id"])
            continue
        if change:
            changes.append(change)
    return changes


def after_ban(r: redis.Redis, banned_session_id: str, now: float | None = None) -> list[dict[str, Any]]:
    """A session was banned: demote its proxy neighbours now rather than at the next review."""
    now = time.time() if now is None else now
    if not policy.get().trust_review.demote_on_neighbour_ban:
        return []
    everyone = sessions.list_sessions(r, None)
    banned = next((s for s in everyone if s["id"] == banned_session_id), None)
    if banned is None or not banned.get("proxy_url"):
        return []
    changes = []
    for session in everyone:
        if session["id"] == banned_session_id or session.get("proxy_url") != banned["proxy_url"] \
                or session.get("status") in sessions.DEAD_STATUSES:
            continue
        for other in _neighbour_bans(r, session, everyone, now):
            change = demote(r, session["id"], f"session {other['id']} on the same proxy was banned",
                            by="policy", now=now)
            if change:
                changes.append(change)
    return changes
