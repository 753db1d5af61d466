"""Container healthcheck: healthy while the worker's loop keeps touching its heartbeat file.

The worker calls `beat(session_dir, ...)` with every PING; `python -m worker_container.healthcheck`
(the image's HEALTHCHECK) exits 0 when that file is younger than a few PING intervals, else 1.
Healthy means "the worker program is alive and looping", not "logged in to WhatsApp": a worker
waiting for its QR scan is healthy, and WhatsApp's state travels in the PING events.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

HEARTBEAT_NAME = "heartbeat.json"
MISSED_BEATS = 3  # unhealthy after this many PING intervals without a beat
MIN_STALE_AFTER = 45.0


def heartbeat_path(session_dir: str) -> str:
    """Where the worker of `session_dir` writes its heartbeat (inside its own volume)."""
    return os.path.join(session_dir, HEARTBEAT_NAME)


def beat(session_dir: str, data: Mapping[str, Any] | None = None) -> None:
    """Record that the worker is alive (atomic replace, so a reader never sees half a file)."""
    path = heartbeat_path(session_dir)
    fd, tmp = tempfile.mkstemp(prefix=".heartbeat-", dir=session_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"at": time.time(), "pid": os.getpid(), **(data or {})}, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check(session_dir: str, ping_interval: float = 15.0, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) from the heartbeat file's age."""
    now = time.time() if now is None else now
    stale_after = max(MIN_STALE_AFTER, MISSED_BEATS * ping_interval)
    try:
        age = now - os.stat(heartbeat_path(session_dir)).st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat yet at {heartbeat_path(session_dir)}"
    except OSError as exc:
        return False, f"cannot read the heartbeat: {exc.strerror}"
    if age > stale_after:
        return False, f"last heartbeat {age:.0f} s ago (limit {stale_after:.0f} s)"
    return True, f"heartbeat {age:.0f} s ago"


def main(environ: Mapping[str, str] | None = None) -> int:
    """Exit code for Docker's HEALTHCHECK: 0 healthy, 1 unhealthy."""
    env = os.environ if environ is None else environ
    session_id = env.get("SESSION_ID", "")
    if not session_id or "/" in session_id or session_id.startswith("."):
        print("unhealthy: SESSION_ID is not set", file=sys.stderr)
        return 1
    sessions_dir = env.get("SESSIONS_DIR") or "/app/sessions"
    try:
        interval = float(env.get("PING_INTERVAL") or 15.0)
    except ValueError:
        interval = 15.0
    healthy, reason = check(os.path.join(sessions_dir, session_id), interval)
    print(("healthy: " if healthy else "unhealthy: ") + reason, file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
