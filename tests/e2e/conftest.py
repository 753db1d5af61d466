"""End-to-end fixtures: the whole stack started by `waorch run`, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.api_client import ApiClient
from tests.support.waiting import wait_for
from waorch.launcher.redis_server import free_port
from waorch.simulator.socks5 import Socks5Server

ROOT = Path(__file__).resolve().parents[2]



@dataclass
class Stack:
    process: subprocess.Popen
    state_dir: Path
    run: dict
    api: ApiClient

    @property
    def sim(self) -> str:
        return self.run["sim_url"]

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def processes(self, *needles: str) -> list[psutil.Process]:
        found = []
        for child in self.children():
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if all(n in cmd for n in needles):
                found.append(child)
        return found

    def session_worker(self, session_id: str) -> psutil.Process | None:
        for child in self.processes("worker_container"):
            try:
                if child.environ().get("SESSION_ID") == session_id:
                    return child
            except psutil.Error:
                continue
        return None


def start_stack(tmp_path: Path, redis_url: str, extra_env: dict[str, str], args: list[str]) -> Stack:
    state = tmp_path / "state"
    env = {**os.environ, "REDIS_URL": redis_url, "WAORCH_LOG_LEVEL": "INFO", **extra_env}
    env.pop("WAORCH_SECRET_KEY", None)
    log = open(tmp_path / "launcher.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "waorch", "run", "--state-dir", str(state),
         "--port", str(free_port()), *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_file = state / "run.json"
    try:
        wait_for(lambda: run_file.exists() or proc.poll() is not None, "run.json", timeout=180)
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError((tmp_path / "launcher.log").read_text()[-4000:])
    run = json.loads(run_file.read_text())
    return Stack(proc, state, run, ApiClient(run["api_url"], run["api_key"]))


def stop_stack(stack: Stack) -> list[int]:
    """SIGINT like Ctrl-C; returns pids of descendants still alive afterwards."""
    descendants = stack.children()
    stack.process.send_signal(signal.SIGINT)
    try:
        stack.process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait(10)
    gone, alive = psutil.wait_procs(descendants, timeout=15)
    for p in alive:
        p.kill()
    return [p.pid for p in alive]


@pytest.fixture
def proxy():
    """A real SOCKS5 proxy with credentials, sending from its own loopback address."""
    server = Socks5Server("127.0.0.1", 0, username="e2e", password="pw-e2e",
                          outbound_source="127.0.0.9").start_in_thread()
    yield server
    server.stop()


def session_status(api: ApiClient, session_id: str) -> str | None:
    res = api.get(f"/api/sessions/{session_id}")
    return res.json().get("status") if res.status_code == 200 else None


def pair_session(stack: Stack, phone: str) -> str:
    """Create a session over the API and scan its QR in the simulator; returns its id."""
    created = stack.api.post("/api/sessions", json={"phone": f"+{phone}", "label": "e2e"})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    wait_for(lambda: stack.api.get(f"/api/sessions/{session_id}/qr").status_code == 200,
             "a QR for the new session", timeout=90)
    qr_png = stack.api.get(f"/api/sessions/{session_id}/qr", headers={"Accept": "image/png"})
    assert qr_png.headers["Content-Type"] == "image/png" and qr_png.content[:4] == b"\x89PNG"
    scan = requests.post(f"{stack.sim}/sim/accounts/{phone}/scan", timeout=10)
    assert scan.status_code == 200, scan.text
    wait_for(lambda: session_status(stack.api, session_id) == "connected", "CONNECTED", timeout=90)
    return session_id
