"""The worker image's HEALTHCHECK (worker_container.healthcheck) as the container runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from worker_container.healthcheck import beat, check, heartbeat_path

ROOT = Path(__file__).resolve().parents[2]


def run_healthcheck(sessions: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "SESSIONS_DIR": str(sessions), **env}
    return subprocess.run([sys.executable, "-m", "worker_container.healthcheck"], env=full,
                          capture_output=True, text=True, timeout=60)


def test_beat_writes_an_atomic_json_heartbeat(tmp_path) -> None:
    beat(str(tmp_path), {"connected": False})
    data = json.loads(Path(heartbeat_path(str(tmp_path))).read_text())
    assert data["pid"] == os.getpid() and data["connected"] is False and abs(data["at"] - time.time()) < 5
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]  # no temp file left behind


def test_check_by_age(tmp_path) -> None:
    assert check(str(tmp_path))[0] is False  # no heartbeat yet
    beat(str(tmp_path))
    assert check(str(tmp_path), ping_interval=15)[0] is True
    assert check(str(tmp_path), ping_interval=15, now=time.time() + 44)[0] is True
    healthy, reason = check(str(tmp_path), ping_interval=15, now=time.time() + 46)
    assert healthy is False and "limit 45" in reason
    assert check(str(tmp_path), ping_interval=60, now=time.time() + 150)[0] is True  # 3 intervals


def test_the_module_exit_codes(tmp_path) -> None:
    sessions = tmp_path / "sessions"
    (sessions / "s1").mkdir(parents=True)
    missing = run_healthcheck(sessions, SESSION_ID="s1")
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr
    beat(str(sessions / "s1"))
    assert run_healthcheck(sessions, SESSION_ID="s1").returncode == 0
    old = time.time() - 600
    os.utime(heartbeat_path(str(sessions / "s1")), (old, old))
    stale = run_healthcheck(sessions, SESSION_ID="s1", PING_INTERVAL="15")
    assert stale.returncode == 1 and "ago" in stale.stderr
    assert run_healthcheck(sessions).returncode == 1  # no SESSION_ID
    assert run_healthcheck(sessions, SESSION_ID="../s1").returncode == 1
