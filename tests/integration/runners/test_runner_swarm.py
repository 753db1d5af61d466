"""The swarm runner against a real Swarm: the single-node dockerd of scripts/setup-dockerd.sh, and
for placement a 3-node Swarm in network namespaces (tests/support/swarm_cluster.py).

As in test_runner_docker.py, the test image is an empty root file system with the host's system
directories, Python and this project bind-mounted read-only; the stand-in worker records its
environment and lifecycle in its data directory. Skipped when no Swarm manager answers, never
under CI=true.
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

import waorch
from tests.support import waiting
from tests.support.lua_alone import lua_delete_session
from tests.support.supervisor_process import STAND_IN
from waorch.core import settings
from waorch.fleet import lifecycle, watchdog
from waorch.proxies.pool import ProxyPool
from waorch.runners import RunnerUnavailable, get_runner
from waorch.runners.docker import LABEL_SESSION
from waorch.runners.swarm import SwarmRunner, service_name
from waorch.sessions import registry as sessions

pytestmark = pytest.mark.engine

DEFAULT_SWARM = "unix:///run/waorch-dockerd.sock"
TEST_IMAGE = os.environ.get("WAORCH_TEST_IMAGE", "localhost/waorch-test:1")
DEADLINE = 90.0
wait_for = partial(waiting.wait_for, timeout=DEADLINE, interval=0.2)


def _unavailable(reason: str):
    message = f"Swarm manager not usable: {reason} (run scripts/setup-dockerd.sh)"
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def swarm_url() -> str:
    import docker

    url = os.environ.get("WAORCH_SWARM_HOST") or DEFAULT_SWARM
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it means the same: no manager here
        _unavailable(f"{url} does not answer ({exc.__class__.__name__})")
    if not info.get("Swarm", {}).get("ControlAvailable"):
        _unavailable(f"{url} is not a Swarm manager")
    try:
        client.images.get(TEST_IMAGE)
    except Exception:  # noqa: BLE001 - missing or unreadable: the same here
        _unavailable(f"test image {TEST_IMAGE} is missing in {url}")
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


def _use_test_image(monkeypatch, tmp_path: Path, url: str, data: str = "bind") -> None:
    monkeypatch.setenv("WAORCH_RUNNER", "swarm")
    monkeypatch.setenv("WAORCH_SWARM_HOST", url)
    monkeypatch.setenv("WAORCH_SWARM_DATA", data)
    monkeypatch.setenv("WAORCH_WORKER_IMAGE", TEST_IMAGE)
    monkeypatch.setenv("WAORCH_DOCKER_MOUNTS", _mounts())
    monkeypatch.setenv("WAORCH_DOCKER_NETWORK", "host")
    monkeypatch.setenv("WAORCH_WORKER_COMMAND", f"{sys.executable} {STAND_IN}")
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    settings.get.cache_clear()


@pytest.fixture
def swarm_env(swarm_url, redis_url, tmp_path, monkeypatch):
    _use_test_image(monkeypatch, tmp_path, swarm_url)
    runner = SwarmRunner()
    runner.client.ping()  # connected now: a test may change the settings afterwards
    made: list[str] = []
    yield runner, made
    for sid in made:
        with contextlib.suppress(Exception):
            runner.client.api.remove_service(service_name(sid))
    _wait_containers_gone(runner.client, made)


def _wait_containers_gone(client, made: list[str]) -> None:
    def gone() -> bool:
        return not any(_containers(client, sid, running_only=False) for sid in made)
    with contextlib.suppress(AssertionError):
        wait_for(gone, "the test's session containers to go")


def _session(r, made: list[str], phone: str = "491510000001") -> dict:
    pool = ProxyPool(r)
    if not pool.urls():
        pool.add("socks5h://u:proxy-pw-1@127.0.0.2:1080")
        pool.add("socks5h://u:proxy-pw-2@127.0.0.3:1080")
    s = lifecycle.create_session(r, "acme", phone)  # WAORCH_RUNNER=swarm: this creates the service
    made.append(s["id"])
    return s


def _starts(sid: str) -> list[str]:
    path = sessions.sessions_root() / sid / "starts.txt"
    return [line for line in path.read_text().split("\n") if line] if path.exists() else []


def _runs(sid: str) -> list[str]:
    return [x for x in _starts(sid) if not x.startswith("stopped")]


def _containers(client, sid: str, running_only: bool = True) -> list[dict]:
    """The session's containers on this engine (one list call: no inspect of containers that Swarm
    may remove meanwhile)."""
    return client.api.containers(all=not running_only, filters={"label": f"{LABEL_SESSION}={sid}"})


def test_get_runner_names_swarm(monkeypatch):
    monkeypatch.setenv("WAORCH_RUNNER", "swarm")
    settings.get.cache_clear()
    assert isinstance(get_runner(), SwarmRunner)


def test_service_contract(r, swarm_env):
    runner, made = swarm_env
    s = _session(r, made)
    assert not s.get("last_error")
    service = runner.client.services.get(service_name(s["id"]))
    spec = service.attrs["Spec"]
    assert spec["Name"] == f"wa_session_{s['id']}"
    assert spec["Labels"][LABEL_SESSION] == s["id"] and spec["Labels"]["waorch.phone"] == s["phone"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    task = spec["TaskTemplate"]
    assert task["RestartPolicy"]["Condition"] == "any"
    assert task["Resources"]["Limits"]["MemoryBytes"] == 512 * 1024**2
    assert task["Resources"]["Limits"]["Pids"] == 256
    container_spec = task["ContainerSpec"]
    assert container_spec["ReadOnly"] is True and container_spec["CapabilityDrop"] == ["ALL"]
    assert {"Type": "tmpfs", "Target": "/tmp"}.items() <= next(
        m for m in container_spec["Mounts"] if m["Target"] == "/tmp").items()

    expected = sessions.worker_environment(s, sessions_dir="/app/sessions")
    assert sorted(container_spec["Env"]) == sorted(f"{k}={v}" for k, v in expected.items())
    # secrets travel in the environment only: no label of the service or its container holds one
    secret = expected["WEBHOOK_SECRET"]
    labels = {**spec["Labels"], **container_spec.get("Labels", {})}
    assert secret and not any(secret in v or "proxy-pw" in v for v in labels.values())

    env_file = sessions.sessions_root() / s["id"] / "env.json"
    wait_for(env_file.exists, "the worker to write into its data directory")
    seen = json.loads(env_file.read_text())
    for name, value in expected.items():
        assert seen[name] == value, name
    assert "REDIS_URL" not in seen and "WAORCH_SECRET_KEY" not in seen
    wait_for(lambda: runner.list().get(s["id"]) == "running", "list() to report it running")

    # what Swarm made of it on the node: the limits reached the container
    (listed,) = _containers(runner.client, s["id"])
    container = runner.client.api.inspect_container(listed["Id"])
    host = container["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["Memory"] == 512 * 1024**2
    assert host["PidsLimit"] == 256 and "ALL" in [c.upper() for c in host["CapDrop"]]
    assert not any(secret in v for v in container["Config"]["Labels"].values())


def test_second_start_is_idempotent(r, swarm_env):
    runner, made = swarm_env
    s = _session(r, made)
    wait_for(lambda: len(_runs(s["id"])) == 1, "first start")
    before = runner.client.services.get(service_name(s["id"])).attrs
    runner.start(s)
    runner.start(sessions.get_session(r, s["id"]))
    after = runner.client.services.get(service_name(s["id"])).attrs
    assert after["ID"] == before["ID"] and after["Version"] == before["Version"]
    assert len(_containers(runner.client, s["id"])) == 1 and len(_runs(s["id"])) == 1


def test_stop_start_restart_remove(r, swarm_env):
    runner, made = swarm_env
    s = _session(r, made)
    wait_for(lambda: len(_runs(s["id"])) == 1, "first start")

    runner.stop(s["id"])
    assert runner.list()[s["id"]] == "exited"
    wait_for(lambda: any(x.startswith("stopped") for x in _starts(s["id"])), "SIGTERM to reach the worker")
    wait_for(lambda: not _containers(runner.client, s["id"]), "no running container")

    runner.start(s)
    wait_for(lambda: len(_runs(s["id"])) == 2, "the second start")
    wait_for(lambda: runner.list()[s["id"]] == "running", "running again")

    old_url = s["proxy_url"]
    ProxyPool(r).allocate(s["id"], s["phone"], leave=old_url)
    moved = lifecycle.restart_session(r, s["id"])
    assert moved["proxy_url"] != old_url
    wait_for(lambda: len(_runs(s["id"])) == 3, "the start after the restart")
    spec = runner.client.services.get(service_name(s["id"])).attrs["Spec"]
    env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
    assert f"PROXY_URL={moved['proxy_url']}" in env
    wait_for(lambda: json.loads((sessions.sessions_root() / s["id"] / "env.json").read_text())["PROXY_URL"]
             == moved["proxy_url"], "the new worker to have the new proxy")
    # Swarm stops the old task before starting the new one: one worker at a time
    wait_for(lambda: len(_containers(runner.client, s["id"])) == 1, "a single running container")

    # a restart with nothing changed still makes a new task
    runner.restart(sessions.get_session(r, s["id"]))
    wait_for(lambda: len(_runs(s["id"])) == 4, "the start after a forced restart")

    runner.remove(s["id"])
    assert s["id"] not in runner.list()
    wait_for(lambda: not _containers(runner.client, s["id"], running_only=False), "the container removed")
    runner.remove(s["id"])  # removing what is gone is no error
    runner.stop(s["id"])


def test_watchdog_starts_gone_services_and_removes_orphans(r, swarm_env):
    runner, made = swarm_env
    s = _session(r, made)
    orphan = _session(r, made, phone="491510000002")
    wait_for(lambda: _runs(s["id"]) and _runs(orphan["id"]), "both workers")
    runner.client.api.remove_service(service_name(s["id"]))  # the worker is gone
    lua_delete_session(r, orphan["id"])  # registry forgot it, the service stays
    report = watchdog.reconcile(r, runner)
    # (services an earlier, interrupted run left on this shared manager are orphans too)
    assert report["started"] == [s["id"]] and orphan["id"] in report["removed"]
    assert s["id"] not in report["removed"]
    listed = runner.list()
    assert listed.get(s["id"]) in ("starting", "running") and orphan["id"] not in listed
    wait_for(lambda: len(_runs(s["id"])) == 2, "the new worker in the same data directory")


def test_bad_node_labels_and_unreachable_manager_are_runner_unavailable(r, swarm_env, monkeypatch):
    runner, made = swarm_env
    s = _session(r, made)
    with pytest.raises(RunnerUnavailable, match="node_labels"):
        runner.start({**s, "id": "nolabel", "node_labels": "zone==eu"})
    monkeypatch.setenv("WAORCH_SWARM_HOST", "unix:///nonexistent/manager.sock")
    settings.get.cache_clear()
    with pytest.raises(RunnerUnavailable):
        SwarmRunner().list()


# --- placement on several nodes ----------------------------------------------------------------

SLOT = "waorch-session"


@pytest.fixture(scope="module")
def placement_cluster():
    import docker

    from tests.support.swarm_cluster import DOCKERD, SwarmCluster

    if os.geteuid() != 0 or not Path(DOCKERD).exists():
        _unavailable("a multi-node Swarm needs root and dockerd")
    try:
        source = docker.DockerClient(base_url=os.environ.get("WAORCH_SWARM_HOST") or DEFAULT_SWARM)
        source.images.get(TEST_IMAGE)
    except Exception as exc:  # noqa: BLE001 - no engine or image: the same here
        _unavailable(f"test image not available ({exc.__class__.__name__})")
    # the manager offers no session slots; the two workers two each
    cluster = SwarmCluster(tag="tp", subnet="10.213.49.0/24", daemon_args={
        2: ["--node-generic-resource", f"{SLOT}=2"], 3: ["--node-generic-resource", f"{SLOT}=2"]})
    try:
        cluster.up()
        cluster.load_image(source, TEST_IMAGE)
        node3 = cluster.manager.client.nodes.get(cluster.nodes[2].node_id)
        spec = node3.attrs["Spec"]
        node3.update({**spec, "Labels": {"zone": "b"}})
        yield cluster
    finally:
        cluster.teardown()
        source.close()


def test_placement_spreads_caps_per_node_and_follows_node_labels(r, redis_url, placement_cluster,
                                                                 tmp_path, monkeypatch):
    cluster = placement_cluster
    _use_test_image(monkeypatch, tmp_path, cluster.manager.url, data="volume")
    monkeypatch.setenv("WAORCH_WORKER_COMMAND", "/usr/bin/sleep infinity")
    monkeypatch.setenv("WAORCH_SWARM_SLOT_RESOURCE", SLOT)
    settings.get.cache_clear()
    runner = SwarmRunner()
    made: list[str] = []

    def placed() -> dict[str, str]:
        """{session id: node name} of running tasks."""
        # tasks first, then services: a task of a service removed in between is skipped
        tasks = runner.client.api.tasks(filters={"desired-state": "running"})
        session_of = {svc["ID"]: svc["Spec"]["Labels"][LABEL_SESSION]
                      for svc in runner.client.api.services(filters={"label": LABEL_SESSION})}
        return {session_of[t["ServiceID"]]: cluster.node_by_id(t["NodeID"]).name for t in tasks
                if t["Status"]["State"] == "running" and t["ServiceID"] in session_of}

    pinned = _session(r, made, phone="491510000010")
    sessions.transition(r, pinned["id"], fields={"node_labels": "zone=b"})
    runner.restart(sessions.get_session(r, pinned["id"]))
    wait_for(lambda: placed().get(pinned["id"]), "the pinned session running")
    assert placed()[pinned["id"]] == cluster.nodes[2].name  # the node labelled zone=b

    others = [_session(r, made, phone=f"49151000002{i}") for i in range(3)]
    wait_for(lambda: len(placed()) == 4, "four sessions running")
    per_node: dict[str, int] = {}
    for node in placed().values():
        per_node[node] = per_node.get(node, 0) + 1
    # spread over the workers, at most 2 (their slots) each, none on the manager (no slots)
    assert per_node == {cluster.nodes[1].name: 2, cluster.nodes[2].name: 2}

    # a fifth does not fit anywhere: Swarm keeps it pending, the runner says starting
    fifth = _session(r, made, phone="491510000030")
    wait_for(lambda: runner.list().get(fifth["id"]) == "starting", "the fifth listed as starting")
    tasks = runner.client.api.tasks(filters={"service": service_name(fifth["id"])})
    assert tasks and all(t["Status"]["State"] == "pending" for t in tasks)
    assert fifth["id"] not in placed()

    # freeing a slot lets it run
    runner.remove(others[0]["id"])
    wait_for(lambda: fifth["id"] in placed(), "the fifth running once a slot is free")
    for sid in made:
        with contextlib.suppress(Exception):
            runner.remove(sid)


# --- the real worker image (scripts/build-images.sh) -------------------------------------------

WORKER_IMAGE = os.environ.get("WAORCH_BUILT_WORKER_IMAGE", "localhost/waorch-worker:latest")


def test_real_worker_image_read_only_non_root_comes_back_connected(r, swarm_url, tmp_path, monkeypatch):
    """The production worker image as a Swarm service: non-root, read-only root file system, its
    data in a named volume; sim transport through a SOCKS5 proxy; killed, Swarm restarts it and it
    logs in again with the credentials kept in its volume (no second QR)."""
    import docker
    import requests

    from app import create_app
    from tests.support.api_client import ThreadedGateway
    from waorch.core import keys
    from waorch.simulator.server import Simulator
    from waorch.simulator.socks5 import Socks5Server
    from waorch.simulator.state import SimConfig

    client = docker.DockerClient(base_url=swarm_url, timeout=60)
    try:
        client.images.get(WORKER_IMAGE)
    except Exception:  # noqa: BLE001 - missing or unreadable: the same here
        _unavailable(f"{WORKER_IMAGE} is not built (run scripts/build-images.sh)")
    monkeypatch.setenv("WAORCH_RUNNER", "swarm")
    monkeypatch.setenv("WAORCH_SWARM_HOST", swarm_url)
    monkeypatch.setenv("WAORCH_SWARM_DATA", "volume")
    monkeypatch.setenv("WAORCH_WORKER_IMAGE", WORKER_IMAGE)
    monkeypatch.setenv("WAORCH_DOCKER_NETWORK", "host")
    monkeypatch.setenv("WAORCH_PING_INTERVAL", "1")
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    sim = Simulator(config=SimConfig()).start_in_thread()
    proxy = Socks5Server(host="127.0.0.4", username="w", password="pw", outbound_source="127.0.0.4")
    proxy.start_in_thread()
    monkeypatch.setenv("WAORCH_SIM_WIRE", sim.wire)
    gateway = ThreadedGateway(create_app())
    monkeypatch.setenv("WAORCH_PUBLIC_URL", gateway.url)
    settings.get.cache_clear()
    runner = SwarmRunner(client)
    made: list[str] = []
    try:
        with gateway:
            ProxyPool(r).add(proxy.url)
            s = lifecycle.create_session(r, "acme", "4915123450019")
            made.append(s["id"])
            wait_for(lambda: r.exists(keys.session_qr(s["id"])), "a QR from the worker image")
            assert requests.post(f"{sim.url}/sim/accounts/4915123450019/scan", timeout=10).ok
            wait_for(lambda: r.hget(keys.session(s["id"]), "status") == "connected", "CONNECTED")

            (listed,) = _containers(client, s["id"])
            container = client.api.inspect_container(listed["Id"])
            assert container["Config"]["User"] == "worker"
            assert container["HostConfig"]["ReadonlyRootfs"] is True
            assert [m["Name"] for m in container["Mounts"] if m["Destination"] == "/app/sessions"] == [
                service_name(s["id"])]
            usage = client.api.stats(listed["Id"], stream=False)["memory_stats"].get("usage", 0)
            print(f"\nsim worker container memory: {usage / 1e6:.1f} MB")

            client.api.kill(listed["Id"])
            killed_at = time.time()

            def back() -> bool:
                connected_at = float(r.hget(keys.session(s["id"]), "connected_at") or 0)
                return r.hget(keys.session(s["id"]), "status") == "connected" and connected_at > killed_at

            wait_for(back, "CONNECTED again after Swarm restarted the killed task")
            qrs = [e for e in r.lrange(keys.session_events(s["id"]), 0, -1) if '"QR"' in e]
            assert len(qrs) == 1  # logged in again with the credentials kept in its volume
    finally:
        for sid in made:
            with contextlib.suppress(Exception):
                runner.remove(sid)
        _wait_containers_gone(client, made)
        for sid in made:
            with contextlib.suppress(Exception):
                client.volumes.get(service_name(sid)).remove(force=True)
        proxy.stop()
        sim.stop()
        client.close()
