"""The docker runner against a real engine API (podman's Docker-compatible service).

The test image is an empty root filesystem (scripts/setup-engine.sh makes it); the host's system
directories, Python and this project are bind-mounted read-only, so containers run this
checkout's code with the host's Python. Skipped when no engine answers, except under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import requests

import waorch
from tests.support import waiting
from tests.support.lua_alone import lua_delete_session
from tests.support.supervisor_process import STAND_IN
from waorch.core import keys, settings
from waorch.fleet import lifecycle, watchdog
from waorch.proxies.pool import ProxyPool
from waorch.runners import RunnerUnavailable
from waorch.runners.docker import LABEL_SESSION, DockerRunner, container_name
from waorch.sessions import registry as sessions

pytestmark = pytest.mark.engine

DEFAULT_ENGINE = "unix:///run/waorch-podman.sock"
TEST_IMAGE = os.environ.get("WAORCH_TEST_IMAGE", "localhost/waorch-test:1")
DEADLINE = 90.0
wait_for = partial(waiting.wait_for, timeout=DEADLINE, interval=0.1)



def _unavailable(reason: str):
    message = f"container engine not usable: {reason} (run scripts/setup-engine.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def engine_url() -> str:
    import docker

    url = os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it means the same: no engine here
        _unavailable(f"{url} does not answer ({exc.__class__.__name__})")
    try:
        client.images.get(TEST_IMAGE)
    except Exception:  # noqa: BLE001 - not found or not readable: missing either way
        _unavailable(f"test image {TEST_IMAGE} is missing")
    client.close()
    return url


def _mounts() -> str:
    root = Path(waorch.__file__).resolve().parent.parent
    paths = ["/usr", "/lib", "/lib64", "/bin", "/etc", sys.base_prefix, sys.prefix, str(root)]
    kept: list[str] = []
    for p in sorted({p for p in paths if Path(p).exists()}):
        if not any(p.startswith(k + "/") for k in kept):
            kept.append(p)
    return ",".join(f"{p}:{p}:ro" for p in kept)


@pytest.fixture
def docker_env(engine_url, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WAORCH_RUNNER", "docker")
    monkeypatch.setenv("DOCKER_HOST", engine_url)
    monkeypatch.setenv("WAORCH_WORKER_IMAGE", TEST_IMAGE)
    monkeypatch.setenv("WAORCH_DOCKER_MOUNTS", _mounts())
    monkeypatch.setenv("WAORCH_DOCKER_NETWORK", "host")
    monkeypatch.setenv("WAORCH_WORKER_COMMAND", f"{sys.executable} {STAND_IN}")
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    settings.get.cache_clear()
    runner = DockerRunner()
    made: list[str] = []
    yield runner, made
    for sid in made:
        with contextlib.suppress(Exception):
            runner.client.containers.get(container_name(sid)).remove(force=True)


def _session(r, made: list[str], phone: str = "491510000001") -> dict:
    pool = ProxyPool(r)
    if not pool.urls():
        pool.add("socks5h://u:pw@127.0.0.2:1080")
        pool.add("socks5h://u:pw@127.0.0.3:1080")
    s = lifecycle.create_session(r, "acme", phone)  # WAORCH_RUNNER=docker: this starts the container
    made.append(s["id"])
    return s


def _starts(sid: str) -> list[str]:
    path = sessions.sessions_root() / sid / "starts.txt"
    return [line for line in path.read_text().split("\n") if line] if path.exists() else []


def test_container_contract(r, docker_env):
    runner, made = docker_env
    s = _session(r, made)
    assert not s.get("last_error")
    container = runner.client.containers.get(container_name(s["id"]))
    assert container.labels[LABEL_SESSION] == s["id"] and container.labels["waorch.phone"] == s["phone"]
    host = container.attrs["HostConfig"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["NetworkMode"] == "host"
    data = str(sessions.sessions_root() / s["id"])
    assert any(m["Source"] == data and m["Destination"] == f"/app/sessions/{s['id']}"
               for m in container.attrs["Mounts"])
    env_file = sessions.sessions_root() / s["id"] / "env.json"
    wait_for(env_file.exists, "the worker to write into its volume")
    seen = json.loads(env_file.read_text())
    for name, value in sessions.worker_environment(s, sessions_dir="/app/sessions").items():
        assert seen[name] == value, name
    assert "REDIS_URL" not in seen and "WAORCH_SECRET_KEY" not in seen
    assert runner.list()[s["id"]] == "running"


def test_stop_start_keeps_the_container_and_restart_takes_a_new_proxy(r, docker_env):
    runner, made = docker_env
    s = _session(r, made)
    wait_for(lambda: len(_starts(s["id"])) == 1, "first start")
    first_id = runner.client.containers.get(container_name(s["id"])).id
    runner.stop(s["id"])
    assert runner.list()[s["id"]] == "exited"
    runner.start(s)
    wait_for(lambda: len([x for x in _starts(s["id"]) if not x.startswith("stopped")]) == 2, "second start")
    assert runner.client.containers.get(container_name(s["id"])).id == first_id
    assert any(x.startswith("stopped") for x in _starts(s["id"]))  # SIGTERM reached the worker
    old_url = s["proxy_url"]
    ProxyPool(r).allocate(s["id"], s["phone"], leave=old_url)
    moved = lifecycle.restart_session(r, s["id"])
    assert moved["proxy_url"] != old_url
    container = runner.client.containers.get(container_name(s["id"]))
    assert container.id != first_id
    assert f"PROXY_URL={moved['proxy_url']}" in container.attrs["Config"]["Env"]


def test_watchdog_starts_gone_workers_and_removes_orphans(r, docker_env):
    runner, made = docker_env
    s = _session(r, made)
    orphan = _session(r, made, phone="491510000002")
    wait_for(lambda: _starts(s["id"]) and _starts(orphan["id"]), "both workers")
    runner.client.containers.get(container_name(s["id"])).remove(force=True)  # the worker is gone
    lua_delete_session(r, orphan["id"])  # registry forgot it, the container runs on
    report = watchdog.reconcile(r, runner)
    assert report["started"] == [s["id"]] and report["removed"] == [orphan["id"]]
    assert runner.list().get(s["id"]) == "running" and orphan["id"] not in runner.list()
    wait_for(lambda: len([x for x in _starts(s["id"]) if not x.startswith("stopped")]) == 2,
             "the new worker in the same data directory")


def test_unreachable_engine_is_runner_unavailable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    settings.get.cache_clear()
    with pytest.raises(RunnerUnavailable):
        DockerRunner().list()


def test_killed_container_worker_comes_back_connected_with_its_data(r, docker_env, tmp_path, monkeypatch):
    """The real worker program in a container: sim transport through a SOCKS5 proxy, gateway webhooks."""
    from app import create_app
    from tests.support.api_client import ThreadedGateway
    from waorch.simulator.server import Simulator
    from waorch.simulator.socks5 import Socks5Server
    from waorch.simulator.state import SimConfig

    runner, made = docker_env
    sim = Simulator(config=SimConfig()).start_in_thread()
    proxy = Socks5Server(host="127.0.0.4", username="w", password="pw", outbound_source="127.0.0.4")
    proxy.start_in_thread()
    monkeypatch.setenv("WAORCH_WORKER_COMMAND", f"{sys.executable} -m worker_container")
    monkeypatch.setenv("WAORCH_SIM_WIRE", sim.wire)
    monkeypatch.setenv("WAORCH_PING_INTERVAL", "1")
    gateway = ThreadedGateway(create_app())
    monkeypatch.setenv("WAORCH_PUBLIC_URL", gateway.url)
    settings.get.cache_clear()
    try:
        with gateway:
            ProxyPool(r).add(proxy.url)
            s = lifecycle.create_session(r, "acme", "4915123450009")
            made.append(s["id"])
            wait_for(lambda: r.exists(keys.session_qr(s["id"])), "a QR from the containerised worker")
            assert requests.post(f"{sim.url}/sim/accounts/4915123450009/scan", timeout=10).ok
            wait_for(lambda: r.hget(keys.session(s["id"]), "status") == "connected", "CONNECTED")
            runner.client.containers.get(container_name(s["id"])).kill()
            killed_at = time.time()

            def back() -> bool:
                watchdog.reconcile(r, runner)
                connected_at = float(r.hget(keys.session(s["id"]), "connected_at") or 0)
                return r.hget(keys.session(s["id"]), "status") == "connected" and connected_at > killed_at

            wait_for(back, "CONNECTED again after the kill")
            qrs = [e for e in r.lrange(keys.session_events(s["id"]), 0, -1) if '"QR"' in e]
            assert len(qrs) == 1  # logged in again with the credentials kept in its volume
    finally:
        proxy.stop()
        sim.stop()


def test_listing_holds_while_containers_come_and_go(engine_url):
    """A container removed while the runner lists them (a restart or delete elsewhere) does not
    make the listing fail: the watchdog must not see "runner unavailable" for that."""
    import threading

    import docker

    client = docker.DockerClient(base_url=engine_url, timeout=60)
    runner = DockerRunner(client)
    stop = threading.Event()
    churned = [0]

    def churn() -> None:
        while not stop.is_set():
            name = f"churn{churned[0]}"
            made = client.containers.create(TEST_IMAGE, command=["/bin/true"], name=f"wa_session_{name}",
                                            labels={LABEL_SESSION: name})
            made.remove(force=True)
            churned[0] += 1

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    listings, errors = 0, []
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline or churned[0] < 5:
            try:
                listed = runner.list()
                assert all(state in ("starting", "exited", "running") for state in listed.values()), listed
            except RunnerUnavailable as exc:
                errors.append(str(exc))
            listings += 1
    finally:
        stop.set()
        worker.join(60)
        for left in client.containers.list(all=True, filters={"label": LABEL_SESSION}):
            if left.name.startswith("wa_session_churn"):
                left.remove(force=True)
    assert errors == [] and listings > 10 and churned[0] >= 5
