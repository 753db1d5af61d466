"""Sessions come back after backup, wipe and restore: a session paired over the API is backed up
by `waorch backup`, the process runner is stopped, Redis and the session directories are wiped,
`waorch restore` puts them back, and the restarted worker is CONNECTED again with its stored
credentials: no new QR, no new scan, and the old API key still works.

The simulated WhatsApp network runs in this process for the whole test, because it plays
WhatsApp's servers, which remember a linked device across our restarts. (`waorch run` starts a
fresh simulator each time, which would forget the pairing: not what a restore faces in reality.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import psutil
import pytest
import requests

from tests.support import waiting
from tests.support.api_client import ApiClient, ThreadedGateway
from tests.support.commands import WAORCH
from waorch.core import keys, settings
from waorch.proxies.pool import ProxyPool
from waorch.runners.process import HEARTBEAT, ProcessRunner
from waorch.sessions import registry as sessions
from waorch.simulator.server import Simulator
from waorch.simulator.socks5 import Socks5Server
from waorch.simulator.state import SimConfig
from waorch.tenants import apikeys

pytestmark = pytest.mark.slow
PHONE = "4915123450088"
wait_for = partial(waiting.wait_for, timeout=120.0, interval=0.2)


class Supervisor:
    """`waorch supervisor` (the process runner) as a child we can stop and start again."""

    def __init__(self, log: Path) -> None:
        self.log, self.process = log, None

    def start(self, r) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(WAORCH + ["supervisor"], env={**os.environ}, stdout=out,
                                            stderr=subprocess.STDOUT)
        wait_for(lambda: r.exists(HEARTBEAT), "the supervisor's heartbeat")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        workers = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=20)
        for p in alive:
            p.kill()
        assert not alive, f"session workers outlived the supervisor: {alive}"


@pytest.fixture
def stack(r, tmp_path, monkeypatch):
    sim = Simulator(config=SimConfig(receipt_delay=0.05, read_delay=0.05)).start_in_thread()
    proxy = Socks5Server(host="127.0.0.2", username="b", password="pw-backup",
                         outbound_source="127.0.0.2").start_in_thread()
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WAORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("WAORCH_TRANSPORT", "sim")
    monkeypatch.setenv("WAORCH_SIM_WIRE", sim.wire)
    monkeypatch.setenv("WAORCH_PING_INTERVAL", "1")
    from app import create_app

    gateway = ThreadedGateway(create_app())
    monkeypatch.setenv("WAORCH_PUBLIC_URL", gateway.url)
    settings.get.cache_clear()
    supervisor = Supervisor(tmp_path / "supervisor.log")
    try:
        with gateway:
            ProxyPool(r).add(proxy.url)
            supervisor.start(r)
            yield sim, gateway, supervisor
    finally:
        supervisor.stop()
        proxy.stop()
        sim.stop()


def waorch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(WAORCH + list(args), env={**os.environ}, capture_output=True, text=True,
                          timeout=180)


def qr_events(r, session_id: str) -> int:
    return sum(1 for e in r.lrange(keys.session_events(session_id), 0, -1) if '"QR"' in e)


def test_a_session_comes_back_connected_after_backup_wipe_restore(r, stack, tmp_path):
    sim, gateway, supervisor = stack
    api = ApiClient(gateway.url, apikeys.create_key(r, "acme", "send,read,admin"))
    created = api.post("/api/sessions", json={"phone": f"+{PHONE}", "label": "backed up"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    wait_for(lambda: api.get(f"/api/sessions/{sid}/qr").status_code == 200, "a QR")
    assert requests.post(f"{sim.url}/sim/accounts/{PHONE}/scan", timeout=10).status_code == 200
    wait_for(lambda: api.get(f"/api/sessions/{sid}").json()["status"] == "connected", "CONNECTED")
    data = sessions.sessions_root() / sid
    wait_for(lambda: data.is_dir() and any(data.iterdir()), "the worker's stored credentials")
    qr_before = qr_events(r, sid)

    made = waorch("backup", "--out", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    archive = made.stdout.strip().splitlines()[-1]

    # disaster: the stack stops, Redis and the session volumes are gone
    supervisor.stop()
    r.flushall()
    shutil.rmtree(sessions.sessions_root())
    assert api.get(f"/api/sessions/{sid}").status_code == 401  # even the API key is gone

    restored = waorch("restore", archive, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert any(data.iterdir())
    after_restore = time.time()
    supervisor.start(r)

    def reconnected() -> bool:
        record = r.hgetall(keys.session(sid))
        return record.get("status") == "connected" and float(record.get("connected_at") or 0) > after_restore

    wait_for(reconnected, "the restored session CONNECTED by a fresh worker")
    assert qr_events(r, sid) == qr_before  # its stored credentials were used: no new QR, no scan
    view = api.get(f"/api/sessions/{sid}")
    assert view.status_code == 200 and view.json()["status"] == "connected"
    assert sid in ProcessRunner(r).list()
