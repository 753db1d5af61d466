"""The `process` runner, client side: commands to `waorch supervisor` through Redis.

Worker processes must be children of one long-lived supervisor (not of whichever gateway or
Celery process asked), so this side only queues commands and reads the state the supervisor
reports. The supervisor also converges on `sessions:active` by itself.
"""

from __future__ import annotations

import json
import time

import redis

from waorch.core.redis_client import get_redis
from waorch.runners.base import Runner, RunnerUnavailable

COMMANDS = "runner:process:commands"  # LIST of JSON {op, session_id, at}
STATE = "runner:process:state"  # HASH session id -> JSON {state, pid, started_at, restarts, ...}
HEARTBEAT = "runner:process:heartbeat"  # STRING: supervisor pid, expires when it stops beating
LOCK = "runner:process:lock"  # STRING: token of the one supervisor allowed to run
COMMANDS_CAP = 10_000


class ProcessRunner(Runner):
    name = "process"

    def __init__(self, r: redis.Redis | None = None) -> None:
        self.r = r or get_redis()

    def _send(self, op: str, session_id: str) -> None:
        if not self.r.exists(HEARTBEAT):
            raise RunnerUnavailable("no `waorch supervisor` is running (process runner)")
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(COMMANDS, json.dumps({"op": op, "session_id": session_id, "at": time.time()}))
        pipe.ltrim(COMMANDS, -COMMANDS_CAP, -1)
        pipe.execute()

    def start(self, session: dict) -> None:
        self._send("start", session["id"])

    def stop(self, session_id: str) -> None:
        self._send("stop", session_id)

    def restart(self, session: dict) -> None:
        self._send("restart", session["id"])

    def remove(self, session_id: str) -> None:
        self._send("remove", session_id)

    def list(self) -> dict[str, str]:
        return {sid: info["state"] for sid, info in self.details().items()}

    def details(self) -> dict[str, dict]:
        """What the supervisor last reported per session (pid, restarts, exit code, ...)."""
        if not self.r.exists(HEARTBEAT):
            raise RunnerUnavailable("no `waorch supervisor` is running (process runner)")
        return {sid: json.loads(text) for sid, text in self.r.hgetall(STATE).items()}
