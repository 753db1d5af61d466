"""`waorch run` as a real child process: start-up, run.json, the stack answering, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.support.commands import WAORCH
from tests.support.waiting import wait_for
from waorch.core import keys
from waorch.launcher.demo import DEMO_PHONES
from waorch.launcher.redis_server import free_port
from waorch.tenants import apikeys

START_DEADLINE = 240  # a loaded 2-core machine starts a dozen Python processes slowly
STOP_DEADLINE = 90
RUN_KEYS = {"api_url", "api_key", "dashboard_url", "flower_url", "sim_url", "redis_url"}


class Launch:
    """One `waorch run` child process with its output in a file."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.state_dir = tmp_path / "state"
        self.output = tmp_path / "launcher.out"
        self.port = free_port()
        argv = [*WAORCH, "run", "--state-dir", str(self.state_dir),
                "--port", str(self.port), *args]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def run_file(self) -> Path:
        return self.state_dir / "run.json"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_run_file(self) -> dict:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"waorch run exited with {self.process.returncode}:\n{self.text()}")
            if self.run_file.exists():
                return json.loads(self.run_file.read_text())
            time.sleep(0.2)
        pytest.fail(f"no run.json within {START_DEADLINE} s:\n{self.text()}")

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"waorch run did not stop within {STOP_DEADLINE} s:\n{self.text()}")

    def kill(self) -> None:
        """Last resort so that a failing test leaves nothing behind."""
        if self.process.poll() is None:
            for proc in self.tree():
                proc.kill()
            self.process.kill()
            self.process.wait()


def qr_events(r, session_id: str) -> int:
    return sum(1 for e in r.lrange(keys.session_events(session_id), 0, -1) if '"QR"' in e)


def child_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAORCH_", "FLOWER_"))}
    env["REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    return env



def all_gone(procs: list[psutil.Process]) -> bool:
    def gone(proc: psutil.Process) -> bool:
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(gone(p) for p in procs)


@pytest.fixture
def launches():
    started: list[Launch] = []
    yield started
    for launch in started:
        launch.kill()


def test_run_demo_brings_up_the_stack_and_stops_cleanly(tmp_path, redis_url, launches):
    launch = Launch(tmp_path, ["--demo"], child_env(redis_url))
    launches.append(launch)
    info = launch.wait_run_file()

    assert set(info) >= RUN_KEYS
    assert info["redis_url"] == redis_url  # a reachable REDIS_URL is used, not replaced
    assert stat.S_IMODE(launch.run_file.stat().st_mode) == 0o600
    for secret in ("secret_key", "flower_auth", "api_key"):
        assert stat.S_IMODE((launch.state_dir / secret).stat().st_mode) == 0o600
    output = launch.text()
    assert info["api_key"] in output and info["flower_url"] in output

    health = requests.get(f"{info['api_url']}/api/health", timeout=10)
    assert health.status_code == 200 and health.json()["redis"] == "ok"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    principal = apikeys.lookup(r, info["api_key"])
    assert principal is not None and principal.is_admin
    paths = requests.get(f"{info['api_url']}/api/openapi.json", timeout=10).json()["paths"]
    if "/api/messages" in paths:
        assert requests.get(f"{info['api_url']}/api/messages", timeout=10).status_code == 401
        listed = requests.get(f"{info['api_url']}/api/messages", timeout=10,
                              headers={"X-API-Key": info["api_key"]})
        assert listed.status_code == 200, listed.text

    assert requests.get(info["flower_url"], timeout=10).status_code == 401
    user, _, password = (launch.state_dir / "flower_auth").read_text().strip().partition(":")
    assert requests.get(info["flower_url"], auth=(user, password), timeout=10).status_code == 200

    # --demo: three proxies on 127.0.0.2-4, credentials never printed
    proxies = r.smembers(keys.PROXIES_ALL)
    assert {p.rsplit("@", 1)[1].split(":")[0] for p in proxies} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    password_of_proxies = (launch.state_dir / "demo_proxy_password").read_text().strip()
    assert password_of_proxies not in launch.text()
    for proxy in proxies:
        host, port = proxy.rsplit("@", 1)[1].split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    # ... and sandbox sessions that the simulator pairs by itself
    session_ids = wait_for(lambda: r.smembers(keys.SESSIONS_ALL), "no demo sessions", timeout=30)
    assert len(session_ids) >= 2
    wait_for(lambda: all(r.hget(keys.session(s), "status") == "connected" for s in session_ids),
               "demo sessions did not connect through the simulator", timeout=120)

    # a second launcher on the same state dir refuses instead of fighting over it
    second = subprocess.run(
        [*WAORCH, "run", "--state-dir", str(launch.state_dir),
         "--port", str(free_port())], env=child_env(redis_url), capture_output=True, text=True,
        timeout=60)
    assert second.returncode != 0
    assert "another `waorch run`" in second.stderr + second.stdout

    tree = launch.tree()
    names = " ".join(" ".join(p.cmdline()) for p in tree)
    for expected in ("gunicorn", "worker", "beat", "flower", "sim", "socks", "supervisor",
                     "worker_container"):
        assert expected in names, expected
    # client webhook deliveries have a Celery worker of their own; the general one skips them
    queues = [p.cmdline()[p.cmdline().index("-Q") + 1] for p in tree if "-Q" in p.cmdline()]
    assert "events" in queues and "dispatch,orchestrator,maintenance" in queues, queues
    assert launch.stop() == 0
    wait_for(lambda: all_gone(tree), "children outlived the launcher", timeout=30)
    assert not launch.run_file.exists()
    assert "waorch run: stopped" in launch.text()

    # The simulator kept its network in the state dir: a second run finds the pairings, and the
    # demo sessions log in with their stored creds (no new QR, no scan), as with WhatsApp.
    network = json.loads((launch.state_dir / "sim" / "network.json").read_text())
    assert {a["phone"] for a in network["accounts"] if a["creds"]} >= set(DEMO_PHONES)
    qr_before = {sid: qr_events(r, sid) for sid in session_ids}
    assert all(qr_before.values())  # the first run paired them by QR
    restarted_at = time.time()
    again = Launch(tmp_path, ["--demo"], child_env(redis_url))
    launches.append(again)
    again.wait_run_file()

    def reconnected(sid: str) -> bool:
        record = r.hgetall(keys.session(sid))
        return record.get("status") == "connected" and float(record.get("connected_at") or 0) > restarted_at

    wait_for(lambda: all(reconnected(sid) for sid in session_ids), "demo sessions back after a restart",
             timeout=120)
    assert {sid: qr_events(r, sid) for sid in session_ids} == qr_before
    assert again.stop() == 0


def test_run_starts_its_own_redis_when_redis_url_is_unreachable(tmp_path, launches):
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    launch = Launch(tmp_path, ["--no-sim"], child_env(dead_url))
    launches.append(launch)
    info = launch.wait_run_file()

    assert info["redis_url"] != dead_url
    assert info["sim_url"] == ""
    own = redis.Redis.from_url(info["redis_url"], decode_responses=True)
    assert own.ping()
    assert apikeys.lookup(own, info["api_key"]) is not None
    assert (launch.state_dir / "redis").is_dir()
    assert requests.get(f"{info['api_url']}/api/health", timeout=10).status_code == 200

    # a child that dies is restarted, and the API comes back
    gateway = next(p for p in launch.tree() if "gunicorn" in " ".join(p.cmdline())
                   and p.ppid() == launch.process.pid)
    gateway.kill()
    wait_for(lambda: "restarted gateway" in launch.text(), "gateway was not restarted", timeout=60)
    wait_for(lambda: health_ok(info["api_url"]), "gateway did not come back", timeout=90)

    tree = launch.tree()
    assert any("redis-server" in " ".join(p.cmdline()) for p in tree)
    assert launch.stop() == 0
    wait_for(lambda: all_gone(tree), "children (Redis included) outlived the launcher", timeout=30)
    assert not launch.run_file.exists()
    # the key survives a restart of the launcher: same state dir, same admin key
    assert (launch.state_dir / "api_key").read_text().strip() == info["api_key"]


def test_run_refuses_a_port_in_use(tmp_path, redis_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*WAORCH, "run", "--state-dir", str(tmp_path / "s"), "--port", str(port)],
            env=child_env(redis_url), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {port}" in result.stdout and "in use" in result.stdout
    assert not (tmp_path / "s" / "run.json").exists()


def health_ok(api_url: str) -> bool:
    try:
        return requests.get(f"{api_url}/api/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False
