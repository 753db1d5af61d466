"""`waorch supervisor` as a child process of a test (or bench), and what to ask of its workers."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.commands import WAORCH
from waorch.core import settings
from waorch.runners import RunnerUnavailable
from waorch.runners.process import ProcessRunner

STAND_IN = Path(__file__).with_name("stand_in_worker.py")


def use_stand_in_workers(monkeypatch, tmp_path: Path) -> None:
    """Session workers are the stand-in program, with data under tmp_path/data and quick restarts."""
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WAORCH_WORKER_COMMAND", f"{sys.executable} {STAND_IN}")
    monkeypatch.setenv("WAORCH_RESTART_BACKOFF_MAX", "2")
    settings.get.cache_clear()


@contextlib.contextmanager
def running_supervisor(env: dict[str, str], log_path: Path,
                       stop_timeout: float = 30.0) -> Iterator[subprocess.Popen]:
    """The supervisor logging to `log_path`; SIGTERM (then SIGKILL) on the way out if still running."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(WAORCH + ["supervisor"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def running_pid(runner: ProcessRunner, session_id: str) -> int | None:
    """The pid of the session's running worker; None while it is not running or no supervisor is up."""
    try:
        info = runner.details().get(session_id) or {}
    except RunnerUnavailable:
        return None
    return info.get("pid") if info.get("state") == "running" else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie is dead for our purpose)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
