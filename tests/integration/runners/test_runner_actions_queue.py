"""WAORCH_RUNNER_ACTIONS=queue: the gateway publishes session actions, the orchestrator performs them.

The gateway runs in this test process configured like the compose gateway: the docker runner with
no reachable engine, so any runner call it made itself would fail (`runner unavailable`). A real
Celery worker consuming `orchestrator` (runner actions `local`) drives the real runner: the
process runner under a real `waorch supervisor`, or the docker runner on the podman engine.
No watchdog runs, so every worker change below came from a queued task.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from functools import partial

import pytest

from tests.integration.launcher.test_compose import ENV_EXAMPLE, config
from tests.integration.runners.test_runner_docker import TEST_IMAGE, _mounts
from tests.integration.runners.test_runner_docker import engine_url as engine_url  # noqa: F401  (fixture)
from tests.support import waiting
from tests.support.api_client import ApiClient, ThreadedGateway
from tests.support.celery_worker import CeleryWorker
from tests.support.supervisor_process import alive, running_pid, running_supervisor, use_stand_in_workers
from waorch.core import keys, settings
from waorch.proxies.pool import ProxyPool
from waorch.runners import actions as runner_actions
from waorch.runners.process import ProcessRunner
from waorch.tenants import apikeys

DEADLINE = 90.0
wait_for = partial(waiting.wait_for, timeout=DEADLINE, interval=0.1)
TASK = runner_actions.TASK
ORCHESTRATOR_ENV = {"WAORCH_RUNNER_ACTIONS": "local"}


def _task_runs(r) -> int:
    return int(r.hget(keys.METRICS_CELERY_TASKS, f"{TASK}|succeeded") or 0)


def _queued(r) -> list[tuple[str, list]]:
    """(task, args) of the messages waiting in the `orchestrator` queue (kombu's Redis list)."""
    found = []
    for raw in reversed(r.lrange("orchestrator", 0, -1)):  # kombu pushes left: oldest last
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], args))
    return found


@pytest.fixture
def gateway_env(redis_url, tmp_path, monkeypatch):
    """This process = the compose gateway: docker runner without an engine, actions queued."""
    use_stand_in_workers(monkeypatch, tmp_path)
    monkeypatch.setenv("WAORCH_RUNNER", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("WAORCH_RUNNER_ACTIONS", "queue")
    settings.get.cache_clear()
    from app import create_app

    with ThreadedGateway(create_app()) as server:
        yield server


@pytest.fixture
def admin(r, gateway_env) -> ApiClient:
    ProxyPool(r).add("socks5h://u:pw@127.0.0.2:1080")
    ProxyPool(r).add("socks5h://u:pw@127.0.0.3:1080")
    return ApiClient(gateway_env.url, apikeys.create_key(r, "acme", "send,read,admin"))


@pytest.fixture
def supervisor(gateway_env, tmp_path):
    env = {**os.environ, "WAORCH_RUNNER": "process", **ORCHESTRATOR_ENV}
    with running_supervisor(env, tmp_path / "supervisor.log") as process:
        yield process


def test_effective_action_follows_the_current_desired_state():
    assert runner_actions.effective_action(None, "restart") == "remove"
    assert runner_actions.effective_action(None, "start") == "remove"
    stopped = {"id": "s1", "desired": "stopped"}
    assert runner_actions.effective_action(stopped, "restart") == "stop"
    active = {"id": "s1", "desired": "active"}
    assert runner_actions.effective_action(active, "restart") == "restart"
    assert runner_actions.effective_action(active, "stop") == "start"
    assert runner_actions.effective_action(active, "remove") == "start"


def test_api_restart_and_delete_go_through_the_orchestrator_queue(r, admin, supervisor, tmp_path):
    runner = ProcessRunner(r)
    wait_for(lambda: r.exists("runner:process:heartbeat"), "the supervisor")
    created = admin.post("/api/sessions", json={"phone": "+4915123456781"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    first = wait_for(lambda: running_pid(runner, sid), "the supervisor to start the desired worker")

    restarted = admin.post(f"/api/sessions/{sid}/restart")
    assert restarted.status_code == 202, restarted.text
    # the gateway only published: both actions wait in the queue, nothing consumes it yet
    assert _queued(r) == [(TASK, [sid, "start"]), (TASK, [sid, "restart"])]
    assert _task_runs(r) == 0

    with CeleryWorker(tmp_path, queues="orchestrator", env={"WAORCH_RUNNER": "process", **ORCHESTRATOR_ENV}):
        second = wait_for(lambda: (p := running_pid(runner, sid)) and p != first and p,
                          "a new worker process through the queued restart")
        wait_for(lambda: _task_runs(r) == 2, "both queued tasks to run")
        assert not alive(first)
        assert not r.hget(keys.session(sid), "last_error")  # nobody tried the runner without an engine
        assert r.llen("orchestrator") == 0

        assert admin.post(f"/api/sessions/{sid}/restart").status_code == 202
        assert admin.delete(f"/api/sessions/{sid}").status_code == 204
        wait_for(lambda: _task_runs(r) == 4, "the restart and remove tasks")
        wait_for(lambda: sid not in runner.details(), "the worker to be gone")
        assert not alive(second)
        assert not any(alive(int(line)) for line in
                       (tmp_path / "data" / "sessions" / sid / "starts.txt").read_text().split()
                       if line.isdigit())


@pytest.mark.engine
def test_docker_restart_then_delete_leaves_no_container(engine_url, r, admin, tmp_path):  # noqa: F811
    import docker

    from waorch.runners.docker import DockerRunner, container_name

    client = docker.DockerClient(base_url=engine_url, timeout=60)
    runner = DockerRunner(client)
    made: list[str] = []
    orchestrator_env = {"DOCKER_HOST": engine_url, "WAORCH_WORKER_IMAGE": TEST_IMAGE,
                        "WAORCH_DOCKER_MOUNTS": _mounts(), "WAORCH_DOCKER_NETWORK": "host",
                        **ORCHESTRATOR_ENV}

    def container_id(sid: str) -> str | None:
        try:
            found = runner.list().get(sid) == "running" and client.containers.get(container_name(sid))
        except docker.errors.NotFound:  # removed between the two calls
            return None
        return found.id if found else None

    try:
        with CeleryWorker(tmp_path, queues="orchestrator", concurrency=2, env=orchestrator_env):
            sid = admin.post("/api/sessions", json={"phone": "+4915123456781"}).json()["id"]
            made.append(sid)
            first = wait_for(lambda: container_id(sid), "the container started by the queued task")
            assert admin.post(f"/api/sessions/{sid}/restart").status_code == 202
            wait_for(lambda: (c := container_id(sid)) and c != first, "a new container", timeout=120)
            wait_for(lambda: _task_runs(r) == 2, "the start and restart tasks")

            # back to back, taken by two pool processes at once: the lock and the re-read of the
            # desired state leave no container, whichever runs first
            assert admin.post(f"/api/sessions/{sid}/restart").status_code == 202
            assert admin.delete(f"/api/sessions/{sid}").status_code == 204
            wait_for(lambda: _task_runs(r) == 4, "the restart and remove tasks", timeout=120)
            assert sid not in runner.list()

            # a restart task that arrives after the delete (late or redelivered) starts nothing
            other = admin.post("/api/sessions", json={"phone": "+4915123456782"}).json()["id"]
            made.append(other)
            wait_for(lambda: container_id(other), "the second session's container")
            assert admin.delete(f"/api/sessions/{other}").status_code == 204
            wait_for(lambda: _task_runs(r) == 6, "its start and remove tasks", timeout=120)
            runner_actions.publish(r, other, "restart")
            wait_for(lambda: _task_runs(r) == 7, "the stale restart task", timeout=120)
            assert other not in runner.list()
    finally:
        for sid in made:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(container_name(sid)).remove(force=True)
        client.close()


def test_compose_queues_actions_everywhere_but_the_orchestrator():
    from tests.integration.launcher.test_compose import compose_command

    compose_command()  # skips when Docker Compose is not installed
    done = config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    import yaml

    services = yaml.safe_load(done.stdout)["services"]
    modes = {name: svc["environment"].get("WAORCH_RUNNER_ACTIONS")
             for name, svc in services.items() if "REDIS_URL" in svc.get("environment", {})}
    assert modes.pop("orchestrator") == "local"
    assert set(modes) >= {"gateway", "worker", "events", "beat", "flower"}
    assert set(modes.values()) == {"queue"}
