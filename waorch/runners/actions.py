"""Session runner actions through the `orchestrator` queue (WAORCH_RUNNER_ACTIONS=queue).

A process without the container engine (the compose gateway) publishes the action; the
orchestrator worker, which has the engine, performs it. Tasks of one session may run out of
order, twice (acks_late) or side by side (worker concurrency), so a task does not replay the
action it was given: under a per-session lock it re-reads the session and converges on the
desired state of *now* (see `effective_action`). Whichever task runs last therefore read the
state after the last change, and a task for a session deleted meanwhile never starts an orphan.
"""

from __future__ import annotations

import logging

import redis

from waorch.core import jobs, keys, settings
from waorch.runners import RunnerUnavailable, get_runner
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

TASK = "tasks.orchestration.run_session_action"
ACTIONS = ("start", "restart", "stop", "remove")
MODES = ("local", "queue")
LOCK_TTL = 120  # well above one docker restart (10 s stop timeout + create)
LOCK_WAIT = 150  # longer than LOCK_TTL: a waiter outlives the lock of a holder that died


def mode() -> str:
    """WAORCH_RUNNER_ACTIONS: `local` or `queue`."""
    value = settings.get().runner_actions
    if value not in MODES:
        raise ValueError(f"WAORCH_RUNNER_ACTIONS must be 'local' or 'queue', not {value!r}")
    return value


def publish(r: redis.Redis, session_id: str, action: str) -> bool:
    """Queue the action for the orchestrator; a failed publish is recorded like a runner that is down."""
    if action not in ACTIONS:
        raise ValueError(f"unknown runner action {action!r}")
    try:
        jobs.publish(TASK, [session_id, action], queue="orchestrator")
        return True
    except Exception as exc:  # noqa: BLE001 - broker unreachable: the watchdog still converges starts/removals
        log.warning("could not queue %s of session %s: %s", action, session_id, exc.__class__.__name__)
        if action in ("start", "restart"):
            sessions.transition(r, session_id,
                                fields={"last_error": f"runner action not queued: {exc.__class__.__name__}"})
        return False


def effective_action(session: dict | None, action: str) -> str:
    """What to do now: the session's current desired state wins over the action that was asked.

    Gone → remove; desired stopped → stop; desired active → the asked start/restart, else start
    (a stale stop or remove must not take down a session that is wanted again).
    """
    if session is None:
        return "remove"
    if session.get("desired") == "stopped":
        return "stop"
    return action if action in ("start", "restart") else "start"


def perform(r: redis.Redis, session_id: str, action: str) -> str:
    """Drive the runner in this process for the session's current desired state; returns what it did."""
    with r.lock(keys.session_action_lock(session_id), timeout=LOCK_TTL, blocking_timeout=LOCK_WAIT):
        session = sessions.get_session(r, session_id)
        done = effective_action(session, action)
        run_locally(r, session or {"id": session_id}, done)
    if done != action:
        log.info("session %s: %s instead of %s (its desired state changed)", session_id, done, action)
    return done


def run(r: redis.Redis, session: dict, action: str) -> bool:
    """Have the runner act: here, or through the `orchestrator` queue (WAORCH_RUNNER_ACTIONS=queue)."""
    if mode() == "queue":
        return publish(r, session["id"], action)
    return run_locally(r, session, action)


def run_locally(r: redis.Redis, session: dict, action: str) -> bool:
    """Ask the runner to act in this process; a runner that is down is recorded (watchdog retries)."""
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
            sessions.transition(r, session["id"], fields={"last_error": f"runner unavailable: {exc}"[:300]})
        return False
