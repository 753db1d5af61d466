"""The interface every session runner implements (SPEC section 6: one worker per session)."""

from __future__ import annotations

from abc import ABC, abstractmethod

# States a runner reports per session id.
RUNNING = "running"  # the worker process/container is up
STARTING = "starting"  # asked to start, not up yet (or waiting out a restart backoff)
EXITED = "exited"  # it exists but is not running (crashed or stopped)

ALIVE = (RUNNING, STARTING)


class RunnerUnavailable(RuntimeError):
    """The runner's backend (engine API, supervisor) cannot be reached; nothing was done."""


class Runner(ABC):
    """Starts, stops and lists session workers; `session` is the dict of sessions.get_session."""

    name = "abstract"

    @abstractmethod
    def start(self, session: dict) -> None:
        """Make sure the session's worker runs (no-op when it already does)."""

    @abstractmethod
    def stop(self, session_id: str) -> None:
        """Stop the worker gracefully; its data stays."""

    @abstractmethod
    def restart(self, session: dict) -> None:
        """Stop and start again with the session's current environment (e.g. a new proxy)."""

    @abstractmethod
    def remove(self, session_id: str) -> None:
        """Stop the worker and forget it (the data directory stays)."""

    @abstractmethod
    def list(self) -> dict[str, str]:
        """{session_id: state} of every worker the runner knows about."""
