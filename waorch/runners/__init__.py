"""Session runners: `process` (children of `waorch supervisor`), `docker` (Engine API), `swarm`."""

from __future__ import annotations

from waorch.core import settings
from waorch.runners.base import ALIVE, EXITED, RUNNING, STARTING, Runner, RunnerUnavailable

__all__ = ["ALIVE", "EXITED", "RUNNING", "STARTING", "Runner", "RunnerUnavailable", "get_runner"]


def get_runner(name: str | None = None) -> Runner:
    """The runner chosen by WAORCH_RUNNER (or `name`)."""
    name = name or settings.get().runner
    if name == "process":
        from waorch.runners.process import ProcessRunner  # noqa: PLC0415  (docker SDK not needed)

        return ProcessRunner()
    if name == "docker":
        from waorch.runners.docker import DockerRunner  # noqa: PLC0415

        return DockerRunner()
    if name == "swarm":
        from waorch.runners.swarm import SwarmRunner  # noqa: PLC0415

        return SwarmRunner()
    raise ValueError(f"WAORCH_RUNNER must be 'process', 'docker' or 'swarm', not {name!r}")
