"""Issue 13, "Done when": with WAORCH_SESSION_STORE=postgres://..., a paired sandbox session comes
back CONNECTED, with no scan, after (a) its whole data directory is deleted and the stack is
restarted with a fresh state directory (same Redis, same PostgreSQL, same external simulator),
and (b) `waorch session move`.

Everything is real: `waorch run --no-sim` twice (each with its own state directory), one external
`waorch sim` both use (WAORCH_SIM_URL/WAORCH_SIM_WIRE: SPEC section 11), a private PostgreSQL, one
Redis, a SOCKS5 proxy. "No scan" means: the simulator was asked to scan once, and the session
showed no QR again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import pair_session, session_status, start_stack, stop_stack
from tests.support import waiting
from tests.support.commands import WAORCH
from waorch.core import keys
from waorch.launcher.redis_server import free_port

pytestmark = pytest.mark.slow
PHONE, FRIEND = "4915123450071", "4915123450072"
wait_for = partial(waiting.wait_for, timeout=180.0, interval=0.3)
# short enough that a move's wait for the old worker's silence stays short
PINGS = {"WAORCH_PING_INTERVAL": "3", "WAORCH_PING_TIMEOUT": "15"}


@pytest.fixture
def external_sim(tmp_path):
    """`waorch sim` started on its own, as on the one host of a sandbox network."""
    port, wire = free_port(), free_port()
    log = open(tmp_path / "sim.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(WAORCH + ["sim", "--host", "127.0.0.1", "--port", str(port), "--wire-port",
                                      str(wire), "--state-dir", str(tmp_path / "sim-state"),
                                      "--receipt-delay", "0.1", "--read-delay", "0.1"],
                            env={**os.environ}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/sim/messages", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(lambda: answers() or proc.poll() is not None, "the external simulator")
    assert proc.poll() is None, (tmp_path / "sim.log").read_text()[-3000:]
    yield url, f"127.0.0.1:{wire}"
    proc.terminate()
    proc.wait(30)
    log.close()


def qr_events_since(r, session_id: str, since: float) -> list[dict]:
    events = [json.loads(item) for item in r.lrange(keys.session_events(session_id), 0, -1)]
    return [e for e in events if e.get("event") == "QR" and e.get("at", 0) >= since]


def delivered(sim_url: str, text: str) -> bool:
    found = requests.get(f"{sim_url}/sim/messages", params={"from": PHONE, "to": FRIEND}, timeout=10).json()
    items = found.get("messages", found) if isinstance(found, dict) else found
    return any(m.get("text") == text for m in items)


def test_a_session_comes_back_without_a_scan_after_losing_its_host_and_after_a_move(
        tmp_path, redis_url, r, postgres_server, external_sim, proxy) -> None:
    sim_url, sim_wire = external_sim
    store = postgres_server.create_database(f"e2e_{uuid.uuid4().hex[:8]}")
    database = store.rsplit("/", 1)[1].split("?")[0]
    policy = tmp_path / "policy.json"  # messages at any hour, to the same person, without waiting long
    policy.write_text(json.dumps({"trust_levels": {"new": {"per_minute": 30, "per_day": 1000}},
                                  "quiet_hours": None, "recipient_daily_cap": None}))
    env = {"WAORCH_SESSION_STORE": store, "WAORCH_SIM_URL": sim_url, "WAORCH_SIM_WIRE": sim_wire,
           "WAORCH_TRANSPORT": "sim", "WAORCH_POLICY_FILE": str(policy), **PINGS}

    # -- a session paired on the first "host" ---------------------------------------------------
    first_dir = tmp_path / "host1"
    first_dir.mkdir()
    stack = start_stack(first_dir, redis_url, env, ["--no-sim"])
    try:
        assert stack.run["sim_url"] == sim_url  # the external simulator, not one of its own
        assert not stack.processes("waorch.cli.main", " sim ")  # it started none
        added = stack.api.post("/api/proxies", json={"url": proxy.url})
        assert added.status_code == 201, added.text
        session_id = pair_session(stack, PHONE)
        session = stack.api.get(f"/api/sessions/{session_id}").json()
        assert session["jid"].startswith(PHONE) and session["jid"].endswith("@s.whatsapp.net")
        data_dir = stack.state_dir / "data" / "sessions" / session_id
        assert data_dir.is_dir() and not (data_dir / "sim-creds.json").exists()  # not on the host
        stored = postgres_server.psql("SELECT session_id || ' ' || phone FROM waorch_sim_devices",
                                      database=database)
        assert stored == f"{session_id} {PHONE}"
        first_pid = stack.session_worker(session_id).pid
    finally:
        assert stop_stack(stack) == []

    # -- the host is gone: its whole state directory, session data included -------------------------
    shutil.rmtree(first_dir)
    second_dir = tmp_path / "host2"
    second_dir.mkdir()
    restarted_at = time.time()
    stack = start_stack(second_dir, redis_url, env, ["--no-sim"])
    try:
        wait_for(lambda: session_status(stack.api, session_id) == "connected"
                 and (stack.session_worker(session_id) is not None), "CONNECTED on the new host")
        assert stack.session_worker(session_id).pid != first_pid
        assert qr_events_since(r, session_id, restarted_at) == []  # no QR: nothing to scan
        assert stack.api.get(f"/api/sessions/{session_id}/qr").status_code == 404
        sent = stack.api.post("/api/send", json={"to": f"+{FRIEND}", "text": "after the host loss",
                                                 "from": f"+{PHONE}"})
        assert sent.status_code == 202, sent.text
        wait_for(lambda: delivered(sim_url, "after the host loss"), "the message on the network")

        # -- waorch session move -------------------------------------------------------------------
        worker_before = stack.session_worker(session_id).pid
        moved_at = time.time()
        cli_env = {**os.environ, **env, "REDIS_URL": redis_url, "WAORCH_RUNNER": "process",
                   "WAORCH_DATA_DIR": str(stack.state_dir / "data")}
        moved = subprocess.run(WAORCH + ["session", "move", session_id, "--wait", "120"], env=cli_env,
                               capture_output=True, text=True, timeout=200)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert f"moved {session_id}" in moved.stdout
        assert "old data directory kept in" in moved.stderr  # process runner: a fresh data directory
        wait_for(lambda: session_status(stack.api, session_id) == "connected"
                 and stack.session_worker(session_id) is not None
                 and stack.session_worker(session_id).pid != worker_before, "CONNECTED after the move")
        assert qr_events_since(r, session_id, moved_at) == []
        record = r.hgetall(keys.session(session_id))
        assert record["desired"] == "active" and record.get("moving") == ""
        history = [json.loads(e) for e in r.lrange(keys.session_events(session_id), 0, -1)]
        stopping = [e for e in history if e["event"] == "STOPPING" and e["at"] >= moved_at]
        assert stopping, "the old worker stopped cleanly"
        statuses = [e for e in history if e["event"] == "MOVE"]
        assert [e["data"]["phase"] for e in statuses][:2] == ["starting", "stopping"]  # newest first
        sent = stack.api.post("/api/send", json={"to": f"+{FRIEND}", "text": "after the move",
                                                 "from": f"+{PHONE}"})
        assert sent.status_code == 202
        wait_for(lambda: delivered(sim_url, "after the move"), "the message after the move")
    finally:
        assert stop_stack(stack) == []
    assert not list(Path(tmp_path).glob("host1"))
