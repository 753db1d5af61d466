"""`waorch supervisor`: the long-lived parent of every `process`-runner worker.

It converges on the desired state (`sessions:active`), obeys commands from ProcessRunner,
restarts crashed workers with exponential backoff, reports what runs to Redis, and on SIGTERM
stops its children (SIGTERM, wait, SIGKILL) so that nothing is left behind. Children also get
SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

import waorch
from waorch.core import keys, settings
from waorch.runners.base import EXITED, RUNNING, STARTING
from waorch.runners.process import COMMANDS, HEARTBEAT, LOCK, STATE
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

STOP_GRACE = 10.0  # seconds a worker gets between SIGTERM and SIGKILL
STABLE_AFTER = 60.0  # a worker that ran this long resets its crash backoff
LOCK_TTL = 15
HEARTBEAT_TTL = 10
# Passed through to workers; everything else (REDIS_URL, WAORCH_SECRET_KEY, ...) stays here.
_PASS_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE",
             "WAORCH_ALLOW_NO_PROXY", "PYTHONUNBUFFERED")
_PR_SET_PDEATHSIG = 1


class SupervisorRunning(RuntimeError):
    """Another supervisor holds the lock on this Redis."""


def worker_command() -> list[str]:
    """WAORCH_WORKER_COMMAND split like a shell would, else this Python's `-m worker_container`."""
    configured = settings.get().worker_command
    return shlex.split(configured) if configured else [sys.executable, "-m", "worker_container"]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    session_id: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    crashes: int = 0  # consecutive short-lived runs, for the backoff
    not_before: float = 0.0  # earliest next start
    stop_deadline: float | None = None  # SIGKILL after this
    restart_requested: bool = False
    exit_code: int | None = None
    log_path: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self, r: redis.Redis, poll: float = 0.5) -> None:
        self.r = r
        self.poll = poll
        self.children: dict[str, Child] = {}
        self.token = secrets.token_hex(8)
        self.stopping = threading.Event()
        self.backoff_max = settings.get().restart_backoff_max
        self.log_dir = Path(settings.get().data_dir).resolve() / "logs"

    # -- lifecycle -------------------------------------------------------------------------------

    def acquire(self) -> None:
        if not self.r.set(LOCK, self.token, nx=True, ex=LOCK_TTL):
            raise SupervisorRunning("another `waorch supervisor` is running on this Redis")
        self.r.delete(COMMANDS, STATE)  # it converges on sessions:active anyway
        self._beat()

    def _beat(self) -> None:
        if self.r.get(LOCK) not in (None, self.token):
            raise SupervisorRunning("lost the supervisor lock to another process")
        pipe = self.r.pipeline(transaction=True)
        pipe.set(LOCK, self.token, ex=LOCK_TTL)
        pipe.set(HEARTBEAT, str(os.getpid()), ex=HEARTBEAT_TTL)
        pipe.execute()

    def run(self) -> None:
        """Serve until `stopping` is set; then stop every child."""
        self.acquire()
        log.info("supervisor %s running", os.getpid())
        last_beat = 0.0
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if now - last_beat >= 2:
                    self._beat()
                    last_beat = now
                item = self.r.blpop([COMMANDS], timeout=self.poll)
                if item is not None:
                    self.handle(json.loads(item[1]))
                self.step()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every child: SIGTERM all, wait up to STOP_GRACE, SIGKILL the rest."""
        for child in self.children.values():
            if child.alive:
                child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        with contextlib.suppress(redis.RedisError):
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(STATE, HEARTBEAT)
            pipe.execute()
            if self.r.get(LOCK) == self.token:
                self.r.delete(LOCK)
        log.info("supervisor stopped %d workers", len(self.children))

    # -- one round ---------------------------------------------------------------------------------

    def handle(self, command: dict) -> None:
        op, sid = command.get("op"), str(command.get("session_id", ""))
        child = self.children.get(sid)
        if op == "restart":
            child = self.children.setdefault(sid, Child(sid))
            child.not_before = 0.0
            child.crashes = 0
            if child.alive:
                child.restart_requested = True
                self._terminate(child)
        elif op == "start" and child is not None and not child.alive and child.stop_deadline is None:
            child.not_before = min(child.not_before, time.time() + 1)
        elif op in ("stop", "remove") and child is not None:
            self._terminate(child)
            if op == "remove" and not child.alive:
                self.children.pop(sid, None)

    def step(self) -> None:
        """Reap exits, enforce stop deadlines, converge on the desired state, report."""
        now = time.time()
        desired = self.r.smembers(keys.SESSIONS_ACTIVE)
        for child in list(self.children.values()):
            self._reap(child, now)
        for sid in desired:
            child = self.children.setdefault(sid, Child(sid))
            if not child.alive and child.stop_deadline is None and now >= child.not_before:
                self._spawn(child)
        for sid, child in list(self.children.items()):
            if sid not in desired:
                if child.alive:
                    self._terminate(child)
                elif child.stop_deadline is None:
                    self.children.pop(sid)
        self._report(desired)

    def _reap(self, child: Child, now: float) -> None:
        if child.process is None:
            return
        code = child.process.poll()
        if code is None:
            if child.stop_deadline is not None and now >= child.stop_deadline:
                log.warning("worker of session %s ignored SIGTERM; killing it", child.session_id)
                child.process.kill()
            return
        ran = now - child.started_at
        was_stopping = child.stop_deadline is not None
        child.exit_code = code
        child.process = None
        child.stop_deadline = None
        if child.restart_requested or was_stopping:
            child.restart_requested = False
            child.not_before = now
            return
        child.crashes = 0 if ran >= STABLE_AFTER else child.crashes + 1
        # The first crash after a good run restarts at once; repeated ones back off 1, 2, 4 ... s.
        delay = min(self.backoff_max, 2 ** (child.crashes - 2)) if child.crashes > 1 else 0.0
        child.not_before = now + delay
        log.warning("worker of session %s exited with %s after %.1fs; restart in %.0fs",
                    child.session_id, code, ran, delay)

    def _terminate(self, child: Child) -> None:
        if child.alive and child.stop_deadline is None:
            child.process.terminate()
            child.stop_deadline = time.time() + STOP_GRACE

    def _spawn(self, child: Child) -> None:
        session = sessions.get_session(self.r, child.session_id)
        if session is None:
            return
        env = {k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith("LC_")}
        env.update(sessions.worker_environment(session))
        root = str(Path(waorch.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
        data_dir = Path(env["SESSIONS_DIR"]) / child.session_id
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child.log_path = str(self.log_dir / f"session-{child.session_id}.log")
        try:
            with open(child.log_path, "ab") as log_file:
                child.process = subprocess.Popen(
                    worker_command(), env=env, cwd=str(data_dir), stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent)
        except OSError as exc:
            log.error("cannot start the worker of session %s: %s", child.session_id, exc)
            child.crashes += 1
            child.not_before = time.time() + min(self.backoff_max, 2 ** child.crashes)
            return
        if child.started_at:
            child.restarts += 1
        child.started_at = time.time()
        child.exit_code = None
        log.info("started worker of session %s (pid %d)", child.session_id, child.process.pid)

    def _report(self, desired: set[str]) -> None:
        now = time.time()
        state = {}
        for sid, child in self.children.items():
            if child.alive:
                name = RUNNING
            elif sid in desired and child.stop_deadline is None:
                name = STARTING
            else:
                name = EXITED
            state[sid] = json.dumps({
                "state": name, "pid": child.process.pid if child.alive else None,
                "started_at": child.started_at or None, "restarts": child.restarts,
                "exit_code": child.exit_code, "next_start": child.not_before if name == STARTING else None,
                "updated_at": now})
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(STATE)
        if state:
            pipe.hset(STATE, mapping=state)
        pipe.execute()


def serve(r: redis.Redis) -> None:
    """Run a supervisor in this process until SIGTERM or SIGINT."""
    supervisor = Supervisor(r)

    def _stop(signum, _frame) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.run()
