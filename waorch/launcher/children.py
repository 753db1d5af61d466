"""Child processes of `waorch run`: each in its own process group, logging to its own file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the launcher is killed outright (SIGKILL),
    # the kernel sends SIGTERM to its children so that nothing is left running unowned.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ChildSpec:
    """What to run and how to tell that it is up."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None  # polled until True during start-up
    ready_timeout: float = 120.0
    stop_timeout: float = 15.0
    stop_tier: int = 1  # lower tiers are stopped first


@dataclass
class Child:
    spec: ChildSpec
    log_path: Path
    process: subprocess.Popen | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None
    log_offset: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            log.write(f"--- waorch run: starting {self.name} at {time.ctime()}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.spec.argv, env=self.spec.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        self.restart_at = None

    def signal_group(self, sig: int) -> None:
        """Signal what is left of this child's process group (orphans of a crashed leader)."""
        if self.process is not None:
            _signal_group(self.process.pid, sig)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_since_start(self) -> str:
        """What this run of the child has logged so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_children(children: Iterable[Child], timeout: float) -> None:
    """SIGTERM each child's process group, SIGKILL whatever is left after `timeout`.

    Descendants are collected first. Grandchildren in process groups of their own (session
    workers under the supervisor) are left to their parent's own shutdown, and only signalled
    here if they outlive it, so that nothing outlives the launcher.
    """
    targets: list[tuple[Child, list[psutil.Process]]] = []
    for child in children:
        if child.process is None:
            continue
        tree = descendants(child.process.pid)
        if child.process.poll() is None or tree:
            targets.append((child, tree))
    for child, _ in targets:
        _signal_group(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child, _ in targets:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(max(0.1, deadline - time.monotonic()))
    orphans = [p for _, tree in targets for p in tree if _alive(p)]
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, orphans = psutil.wait_procs(orphans, timeout=max(2.0, deadline - time.monotonic()))
    for child, _ in targets:
        if child.process.poll() is None:
            _signal_group(child.process.pid, signal.SIGKILL)
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for child, _ in targets:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(5)
    psutil.wait_procs(orphans, timeout=5)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
