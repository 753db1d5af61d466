"""A real 3-node Docker Swarm in network namespaces (tests/support/swarm_cluster.py).

Needs root and Debian's dockerd (scripts/setup-dockerd.sh installs it); skipped elsewhere, never
under CI=true. The service runs the test image (an empty root file system, scripts/setup-engine.sh)
with /bin/sleep from the host's bind-mounted /usr: what matters here is where Swarm runs it.
Down-detection and rescheduling times are printed (pytest -s) and appended to
$WAORCH_SWARM_TIMINGS when that is set; the figures belong in bench/ reports, not assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.support.swarm_cluster import DOCKERD, ClusterError, SwarmCluster

pytestmark = pytest.mark.engine

TEST_IMAGE = os.environ.get("WAORCH_TEST_IMAGE", "localhost/waorch-test:1")
PODMAN = "unix:///run/waorch-podman.sock"
DEADLINE = 120.0  # Swarm's own detection is ~15-20 s with its default 5 s heartbeat


def _unusable(reason: str):
    message = f"3-node Swarm not possible here: {reason}"
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def image_source():
    import docker

    url = os.environ.get("DOCKER_HOST") or PODMAN
    try:
        client = docker.DockerClient(base_url=url, timeout=60)
        client.images.get(TEST_IMAGE)
    except Exception as exc:  # noqa: BLE001 - no engine or no image: the same for this test
        _unusable(f"test image {TEST_IMAGE} not in {url} ({exc.__class__.__name__}; "
                  "run scripts/setup-engine.sh)")
    yield client
    client.close()


@pytest.fixture(scope="module")
def cluster(image_source):
    if os.geteuid() != 0:
        _unusable("needs root (network namespaces, dockerd)")
    if not Path(DOCKERD).exists():
        _unusable(f"{DOCKERD} missing (run scripts/setup-dockerd.sh)")
    made = SwarmCluster(tag="tc")
    try:
        started = time.monotonic()
        made.up()
        print(f"\n3-node swarm up in {time.monotonic() - started:.1f} s")
        made.load_image(image_source, TEST_IMAGE)
        yield made
    except ClusterError as exc:
        pytest.fail(f"cluster did not come up: {exc}")
    finally:
        made.teardown()


def _poll(predicate, what: str, timeout: float = DEADLINE, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _running_on(service) -> str | None:
    """The node id of the service's running task (None if none runs)."""
    service.reload()
    for task in service.tasks(filters={"desired-state": "running"}):
        if task["Status"]["State"] == "running":
            return task["NodeID"]
    return None


def _record(figures: dict) -> None:
    print("\nswarm timings: " + json.dumps(figures))
    target = os.environ.get("WAORCH_SWARM_TIMINGS")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(figures) + "\n")


def test_nodes_ready_and_a_service_moves_off_a_cut_node(cluster: SwarmCluster):
    from docker.types import EndpointSpec, RestartPolicy, ServiceMode

    states = cluster.node_states()
    assert len(states) == 3 and set(states.values()) == {"ready"}
    assert {n.node_id for n in cluster.nodes} == set(states)
    for node in cluster.nodes:
        assert node.client.images.list(name=TEST_IMAGE), f"image missing on {node.name}"

    client = cluster.manager.client
    service = client.services.create(
        TEST_IMAGE, command=["/usr/bin/sleep", "infinity"], name="wsw_probe",
        mode=ServiceMode("replicated", replicas=1), networks=["host"],
        endpoint_spec=EndpointSpec(mode="dnsrr"), constraints=["node.role==worker"],
        mounts=["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro"],
        restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
        stop_grace_period=1_000_000_000)
    try:
        first = _poll(lambda: _running_on(service), "the task running on a worker")
        lost = cluster.node_by_id(first)
        assert lost.role == "worker"
        # the container really runs on that node's daemon
        assert lost.client.containers.list(filters={"label": f"com.docker.swarm.service.id={service.id}"})

        cluster.cut(lost)
        cut_at = time.monotonic()
        _poll(lambda: cluster.node_states()[lost.node_id] == "down", f"{lost.name} marked Down")
        down_after = time.monotonic() - cut_at
        moved = _poll(lambda: (n := _running_on(service)) and n != lost.node_id and n,
                      "the task running on another node")
        running_after = time.monotonic() - cut_at
        assert cluster.node_by_id(moved).role == "worker" and moved != lost.node_id
        # split brain, as documented: the cut node's container still runs until it is back
        still_there = lost.client.containers.list(
            filters={"label": f"com.docker.swarm.service.id={service.id}"})
        _record({"node_down_s": round(down_after, 1), "task_running_elsewhere_s": round(running_after, 1),
                 "old_container_still_running": bool(still_there)})

        cluster.restore(lost)
        _poll(lambda: cluster.node_states()[lost.node_id] == "ready", f"{lost.name} Ready again")
        # back on the network, the node learns its task was moved and stops the old container
        _poll(lambda: not lost.client.containers.list(
            filters={"label": f"com.docker.swarm.service.id={service.id}"}),
            "the old container stopped on the restored node")
        assert _running_on(service) == moved
    finally:
        with contextlib.suppress(Exception):
            service.remove()


def test_teardown_leaves_nothing(image_source):
    if os.geteuid() != 0 or not Path(DOCKERD).exists():
        _unusable("needs root and dockerd")
    small = SwarmCluster(tag="td", size=2, subnet="10.213.48.0/24")
    try:
        small.up()
        assert small.ready_count() == 2
        assert small.node_processes()
    finally:
        small.teardown()
    assert small.leftovers() == []
    assert not small.directory.exists()
    # teardown is safe to repeat (the next run's up() starts with it)
    small.teardown()
    assert small.leftovers() == []


def test_a_tag_in_use_by_another_run_is_left_alone(tmp_path):
    """Another live process holding the tag's lock: teardown and up refuse instead of destroying
    its cluster; once that process is gone (the kernel drops its flock) they proceed."""
    import subprocess
    import sys

    if os.geteuid() != 0:
        _unusable("needs root")
    base = tmp_path / "swarms"
    base.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)", str(base / "tl.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        other = SwarmCluster(tag="tl", size=1, subnet="10.213.51.0/24", base_dir=base)
        with pytest.raises(ClusterError, match="in use"):
            other.teardown()
        with pytest.raises(ClusterError, match="in use"):
            other.up(lock_wait=1)
    finally:
        holder.kill()
        holder.wait()
    other.teardown()  # the holder died: its lock went with it
    assert other.leftovers() == []
