"""Messages of a lost sender go to another one: nothing accepted waits forever on a dead session.

A session is lost when it is banned, logged out, stopped or deleted; its unsent messages (queue,
outbox, and leases once they expire) go back to `queued` in one Lua step and are dispatched
again like new ones, so they reach another session of the tenant (or fail `no_session` when the
tenant has none). A message whose explicit `from` named the lost session fails `session_lost`.
A RESTRICTED session is only paused: its messages wait, unless the pause has more than
WAORCH_REROUTE_AFTER_PAUSE to run and another sender is usable. Triggered at the session's
change (waorch.sessions.registry), with a beat sweep as the safety net for crashes and late leases.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import redis

from waorch.core import keys, lua
from waorch.sending.accept import publish_dispatch
from waorch.sessions import registry as sessions
from waorch.webhooks import events as client_events

log = logging.getLogger(__name__)

REROUTE = lua.Script("sending/reroute", keys=("queue", "outbox", "leases", "unrouted", "gone"),
                     args=("session_id", "now", "why", "explicit", "forget_before"))

# A deleted session stays in sessions:gone this long after its messages are all gone: a dispatch
# that chose it just before the deletion may still route one there.
GONE_GRACE = 600.0


@dataclass
class Rerouted:
    """What one reroute did: ids sent back to routing, ids failed `session_lost`, what is left."""

    rerouted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left: int = 0


def reroute(r: redis.Redis, session_id: str, phone: str, why: str, keep_explicit: bool = False,
            now: float | None = None, dispatch: bool = True) -> Rerouted:
    """Take the session's unsent messages back to routing and dispatch them again.

    `keep_explicit`: messages that asked for this sender stay (the session is only paused)
    instead of failing `session_lost`.
    """
    now = time.time() if now is None else now
    result = REROUTE(r, queue=keys.session_queue(phone), outbox=keys.session_outbox(session_id),
                     leases=keys.session_leases(session_id), unrouted=keys.MESSAGES_UNROUTED,
                     gone=keys.SESSIONS_GONE, session_id=session_id, now=f"{now:.6f}", why=why,
                     explicit="keep" if keep_explicit else "lost", forget_before=f"{now - GONE_GRACE:.6f}")
    count = int(result[1])
    done = Rerouted(rerouted=list(result[2:2 + count]), failed=list(result[2 + count:]),
                    left=int(result[0]))
    for msg_id in done.failed:
        client_events.message_changed(r, msg_id)  # message.status failed (session_lost)
    if done.rerouted or done.failed:
        log.info("%s: %d message(s) back to routing, %d failed session_lost", why,
                 len(done.rerouted), len(done.failed))
    if dispatch and done.rerouted:
        publish_dispatch(done.rerouted)  # a failed publish is left to the recover_unrouted sweep
    return done


def usable_elsewhere(r: redis.Redis, session: dict, now: float) -> bool:
    """Whether the tenant has another session its messages could go to (alive, not paused long)."""
    return any(other["id"] != session["id"] and other.get("status") not in sessions.DEAD_STATUSES
               and not sessions.paused_long(other, now)
               for other in sessions.list_sessions(r, session["tenant"]))


def reroute_if_lost(r: redis.Redis, session: dict, now: float | None = None) -> Rerouted | None:
    """Reroute the session's messages if it is dead or paused for too long; None if it is fine."""
    now = time.time() if now is None else now
    status = session.get("status")
    if status in sessions.DEAD_STATUSES:
        return reroute(r, session["id"], session["phone"],
                       f"session {session['id']} {status.replace('_', ' ')}", now=now)
    if sessions.paused_long(session, now) and usable_elsewhere(r, session, now):
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session["paused_until"]))
        return reroute(r, session["id"], session["phone"],
                       f"session {session['id']} paused until {until}", keep_explicit=True, now=now)
    return None


def after_session_change(r: redis.Redis, session_id: str) -> None:
    """Hook of waorch.sessions.registry after a status or pause change; never raises (the sweep retries)."""
    try:
        session = sessions.get_session(r, session_id)
        if session is not None:
            reroute_if_lost(r, session)
    except Exception:  # noqa: BLE001 - the session change stands; the sweep moves the messages
        log.warning("rerouting the messages of session %s failed; the sweep will", session_id,
                    exc_info=True)


def after_session_deleted(r: redis.Redis, session_id: str, phone: str) -> None:
    """After waorch.fleet.lifecycle.delete_session; never raises (sessions:gone keeps it for the sweep)."""
    try:
        reroute(r, session_id, phone, f"session {session_id} deleted")
    except Exception:  # noqa: BLE001 - recorded in sessions:gone by the delete itself
        log.warning("rerouting the messages of deleted session %s failed; the sweep will",
                    session_id, exc_info=True)


def _holds_messages(r: redis.Redis, candidates: list[tuple[str, str]], now: float) -> list[bool]:
    pipe = r.pipeline(transaction=False)
    for session_id, phone in candidates:
        pipe.llen(keys.session_queue(phone))
        pipe.zcard(keys.session_outbox(session_id))
        pipe.zcount(keys.session_leases(session_id), "-inf", now)
    counts = pipe.execute()
    return [any(counts[i:i + 3]) for i in range(0, len(counts), 3)]


def sweep(r: redis.Redis, now: float | None = None) -> int:
    """The safety net: reroute what lost sessions still hold; returns messages moved or failed."""
    now = time.time() if now is None else now
    moved = 0
    listed = sessions.list_sessions(r, None)
    lost = [s for s in listed if s.get("status") in sessions.DEAD_STATUSES or sessions.paused_long(s, now)]
    if lost:
        for session, busy in zip(lost, _holds_messages(r, [(s["id"], s["phone"]) for s in lost], now),
                                 strict=True):
            if busy:
                done = reroute_if_lost(r, session, now)
                moved += len(done.rerouted) + len(done.failed) if done else 0
    for session_id, raw in r.hgetall(keys.SESSIONS_GONE).items():
        try:
            phone = json.loads(raw)["phone"]
        except (ValueError, KeyError, TypeError):
            log.warning("dropping unreadable sessions:gone entry of %s", session_id)
            r.hdel(keys.SESSIONS_GONE, session_id)
            continue
        done = reroute(r, session_id, phone, f"session {session_id} deleted", now=now)
        moved += len(done.rerouted) + len(done.failed)
    return moved
