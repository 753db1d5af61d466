"""Moving a session (`waorch session move`): stop its worker, wait until it is surely gone, start
it again elsewhere. It comes back without a new QR because its device lives in the PostgreSQL
session store, not on the host (docs/session-store.md).

"Elsewhere" depends on the runner: `swarm` places it by node labels (`--to zone=eu`); `process`
has one host, so there it is a fresh start with a fresh data directory (the old one is kept
aside under `<WAORCH_DATA_DIR>/moved/`); `docker` (one engine) starts it again on the same volume.

While it moves the session is desired-stopped with the field `moving` set: no runner or watchdog
starts it, its STOPPING is not a stop (its messages stay; see worker_events.on_stopping), and no
sender choice picks it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from waorch.core import settings
from waorch.runners import ALIVE, RunnerUnavailable, get_runner
from waorch.runners import actions as runner_actions
from waorch.sessions import registry as sessions
from waorch.sessions import store as session_store

log = logging.getLogger(__name__)

MOVING = "moving"  # session hash field: unix time the move began, "" when none
JOURNAL_FILE = "outbox-journal.jsonl"  # the worker's send journal (worker_container.config), carried over
DEFAULT_WAIT = 300.0


class MoveRefused(RuntimeError):
    """The move cannot be done as asked; nothing was changed."""


class MoveTimeout(RuntimeError):
    """The old worker did not go within the wait; the session stays stopped (moving) for a person."""


@dataclass
class MoveResult:
    session_id: str
    waited: float
    placement: str
    old_data: str | None = None


def placement_fields(runner_name: str, to: str) -> dict[str, str]:
    """Registry fields that make the runner start the session at `to`."""
    if not to:
        return {}
    if runner_name != "swarm":
        raise MoveRefused(f"--to needs the swarm runner; the {runner_name} runner has a single host "
                          "(a move there is a fresh start)")
    items = [item.strip() for item in to.split(",") if item.strip()]
    if not items or any("=" not in item for item in items):
        raise MoveRefused("--to takes node labels key=value[,key=value] (set with `docker node update "
                          "--label-add`)")
    return {"node_labels": ",".join(items)}


def worker_gone(r: redis.Redis, session_id: str, now: float) -> tuple[bool, str]:
    """Whether the session's old worker can no longer be connected: the runner does not run it
    and it has been silent for longer than WAORCH_PING_TIMEOUT (a worker cut off from us may
    still run; it gives up once it cannot report). (gone, what we still wait for)."""
    try:
        state = get_runner().list().get(session_id)
    except RunnerUnavailable as exc:
        state = None
        log.debug("move: runner unavailable (%s); judging by PINGs alone", exc)
    if state in ALIVE:
        return False, f"the runner still runs it ({state})"
    session = sessions.get_session(r, session_id)
    last = (session or {}).get("last_ping") or 0
    quiet = now - last
    timeout = settings.get().ping_timeout
    if quiet <= timeout:
        return False, f"its last PING is {quiet:.0f}s old (waiting for {timeout}s)"
    return True, ""


def fresh_data_directory(session_id: str, now: float) -> str | None:
    """Set the session's data directory aside and start an empty one (the journal comes along:
    it says which messages went out but were not confirmed, so none is sent twice)."""
    current = sessions.sessions_root() / session_id
    if not current.exists():
        return None
    aside = Path(settings.get().data_dir).resolve() / "moved" / f"{session_id}-{int(now)}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    current.rename(aside)
    current.mkdir(mode=0o700)
    if (aside / JOURNAL_FILE).exists():
        shutil.copy2(aside / JOURNAL_FILE, current / JOURNAL_FILE)
    return str(aside)


def move_session(r: redis.Redis, session_id: str, to: str = "", wait: float = DEFAULT_WAIT,
                 clock: Callable[[], float] = time.time, pause: Callable[[float], None] = time.sleep,
                 progress: Callable[[str], None] = lambda text: None) -> MoveResult:
    """Stop, wait until the old worker is gone, start again elsewhere; see the module doc."""
    session = sessions.get_session(r, session_id)
    if session is None:
        raise MoveRefused(f"no session {session_id}")
    if not session_store.uses_postgres():
        raise MoveRefused("a session moves without a new QR only when its device is off the host: "
                          "set WAORCH_SESSION_STORE=postgres://... (with `file` its device stays in "
                          "its data directory)")
    runner_name = settings.get().runner
    placement = placement_fields(runner_name, to)
    began = clock()
    sessions.transition(r, session_id, desired="stopped", fields={MOVING: f"{began:.3f}"},
                        event=sessions.event_record("MOVE", {"to": to, "phase": "stopping"}))
    runner_actions.run(r, {"id": session_id}, "stop")
    progress(f"stopping the worker of {session_id}")
    while True:
        gone, why = worker_gone(r, session_id, clock())
        if gone:
            break
        if clock() - began > wait:
            raise MoveTimeout(f"the old worker of {session_id} is not surely gone after {wait:.0f}s: {why}; "
                              f"the session stays stopped (start it with `waorch session restart`)")
        progress(f"waiting: {why}")
        pause(1.0)
    old_data = fresh_data_directory(session_id, clock()) if runner_name == "process" else None
    sessions.transition(r, session_id, "starting", force=True, desired="active", clear_qr=True,
                        count_restart=True, fields={MOVING: "", **placement},
                        event=sessions.event_record("MOVE", {"to": to, "phase": "starting",
                                                             "waited": round(clock() - began, 1)}))
    moved = sessions.get_session(r, session_id)
    if moved is not None:
        runner_actions.run(r, moved, "start")
    log.info("session %s moved (%s) after %.0fs", session_id, to or "fresh start", clock() - began)
    return MoveResult(session_id, clock() - began, to or "fresh start", old_data)
