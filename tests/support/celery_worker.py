"""A real Celery worker process for integration tests, on the test run's Redis."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: the worker gets SIGKILL if the test process dies without stopping it
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class CeleryWorker:
    """`celery -A tasks.celery_app worker` (or `app`) with the current environment (REDIS_URL etc.)."""

    def __init__(self, log_dir: Path, queues: str = "dispatch,orchestrator,events,maintenance",
                 concurrency: int = 2, env: dict[str, str] | None = None,
                 app: str = "tasks.celery_app") -> None:
        self.node = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_dir / f"celery-{self.node.split('@')[0]}.log"
        self.argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
                     "--concurrency", str(concurrency), "-n", self.node, "--loglevel", "INFO",
                     "--without-mingle", "--without-gossip", "--without-heartbeat"]
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 90.0) -> CeleryWorker:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker not ready after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # the worker's own process group: its pool children go with it
        os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        # a pool child still inside a long delivery must not outlive the test (and later find a
        # new Redis on a reused port)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
