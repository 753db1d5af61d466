"""`waorch doctor` as a real subprocess: real Redis, real SOCKS5 proxies, a real Celery worker."""

from __future__ import annotations

import dataclasses
import json
import os
import socketserver
import subprocess
import threading

import pytest
from celery import Celery

from tests.support.celery_worker import CeleryWorker
from tests.support.commands import WAORCH
from tests.support.waiting import wait_for
from waorch import doctor
from waorch.core import keys, settings
from waorch.launcher.redis_server import free_port, start_local_redis
from waorch.metrics import celery_tasks as task_metrics
from waorch.proxies.pool import ProxyPool
from waorch.simulator.socks5 import Socks5Server

PASSWORD = "d0ctor-pa55"


class _Accept(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1)


@pytest.fixture
def target():
    """The host:port proxy checks tunnel to (stands in for WhatsApp's endpoint)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def live_proxy():
    proxy = Socks5Server(host="127.0.0.2", username="u", password=PASSWORD).start_in_thread()
    yield proxy
    proxy.stop()


def run(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(WAORCH + ["doctor", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def lines_with(output: str, level: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(level)]


def test_dead_proxy_fails_by_name_then_a_healthy_fleet_passes(r, redis_url, target, live_proxy, tmp_path):
    pool = ProxyPool(r)
    pool.add(live_proxy.url)
    dead_url = f"socks5h://u:{PASSWORD}@127.0.0.3:{free_port('127.0.0.3')}"  # nothing listens there
    dead_view, _ = pool.add(dead_url)
    env = {**os.environ, "REDIS_URL": redis_url, "WAORCH_PROXY_CHECK_TARGET": target,
           "WAORCH_RUNNER": "process"}
    with CeleryWorker(tmp_path, concurrency=1, env=env):
        # a periodic task done by the worker: what beat makes happen every 5 s
        client = Celery("doctor-test", broker=redis_url)
        try:
            client.send_task("tasks.maintenance.pump_queues", queue="maintenance")
        finally:
            client.close()
        wait_for(lambda: doctor.BEAT_TASK in task_metrics.last_success(r), "pump_queues to succeed",
                 timeout=60)

        first = run(env)
        out = first.stdout + first.stderr
        assert first.returncode == 1, out
        assert PASSWORD not in out and "Traceback" not in out
        failures = lines_with(first.stdout, "FAIL")
        assert len(failures) == 1, out
        assert dead_view["id"] in failures[0] and "127.0.0.3" in failures[0]
        assert "***:***@" in failures[0]
        assert f"waorch proxy remove {dead_view['id']}" in first.stdout
        assert "1/2 reach" in first.stdout
        ok = "\n".join(lines_with(first.stdout, "OK"))
        assert "redis" in ok and "celery" in ok and "beat" in ok
        assert "test-" in ok  # the test worker's node name answered the ping

        pool.remove(pool.resolve(dead_view["id"]))
        second = run(env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert lines_with(second.stdout, "FAIL") == []
        assert "1/1 reach" in second.stdout
        assert second.stdout.splitlines()[-1].endswith("0 failures")

        as_json = run(env, "--json")
        findings = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert {f["check"] for f in findings} >= {"redis", "runner", "proxies", "profiles", "celery", "beat"}
        assert all(f["level"] in ("OK", "WARN") for f in findings)
        runner = next(f for f in findings if f["check"] == "runner")
        assert runner["level"] == "WARN" and "supervisor" in runner["detail"]  # no session should run


def test_no_workers_and_no_supervisor_with_active_sessions_fail(r, redis_url, target, live_proxy):
    ProxyPool(r).add(live_proxy.url)
    r.sadd(keys.SESSIONS_ACTIVE, "s-waiting")  # a session that should run, with nobody to run it
    env = {**os.environ, "REDIS_URL": redis_url, "WAORCH_PROXY_CHECK_TARGET": target,
           "WAORCH_RUNNER": "process"}
    result = run(env, "--celery-timeout", "1")
    assert result.returncode == 1
    failures = "\n".join(lines_with(result.stdout, "FAIL"))
    assert "no `waorch supervisor` heartbeat (1 sessions should run)" in failures
    assert "no Celery worker answered" in failures
    assert "waorch worker" in result.stdout  # what to do


def test_redis_down_is_one_clear_failure(tmp_path):
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://:rEdIs-pw@127.0.0.1:{port}/0", "WAORCH_RUNNER": "process"}
    result = run(env, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in out and "rEdIs-pw" not in out
    failure = lines_with(result.stdout, "FAIL")[0]
    assert f"redis://:***@127.0.0.1:{port}/0 unreachable" in failure
    assert "start Redis, or point REDIS_URL at it" in result.stdout


def test_engine_unreachable_with_the_docker_runner(tmp_path):
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "WAORCH_RUNNER": "docker",
           "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = run(env, timeout=60)
    assert result.returncode == 1
    engine = [line for line in lines_with(result.stdout, "FAIL") if "engine" in line]
    assert engine and "no-engine.sock unreachable" in engine[0], result.stdout


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own: its configuration is changed."""
    server = start_local_redis(tmp_path / "redis", appendonly=False)
    client = doctor.connect_redis(server.url)
    yield client
    client.config_set("appendonly", "no")  # with AOF turned on it took 10 s to stop on SIGTERM
    client.close()
    server.stop()


def test_persistence_checks(own_redis):
    prod = dataclasses.replace(settings.load(), transport="neonize")
    sim = dataclasses.replace(settings.load(), transport="sim")
    [off_prod] = doctor.check_persistence(own_redis, prod)
    assert off_prod.level == "WARN" and "AOF is off" in off_prod.detail
    assert "--appendonly yes" in off_prod.fix
    assert doctor.check_persistence(own_redis, sim)[0].level == "OK"
    own_redis.config_set("appendonly", "yes")
    [on] = doctor.check_persistence(own_redis, prod)
    assert on.level == "OK" and "AOF on" in on.detail
    own_redis.config_set("maxmemory", "100mb")
    own_redis.config_set("maxmemory-policy", "allkeys-lru")
    evicting = doctor.check_persistence(own_redis, prod)[-1]
    assert evicting.level == "FAIL" and "allkeys-lru" in evicting.detail
    own_redis.config_set("maxmemory-policy", "noeviction")
    assert all(f.level == "OK" for f in doctor.check_persistence(own_redis, prod))


def test_redact_url():
    assert doctor.redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert doctor.redact_url("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert doctor.redact_url("redis://pw@h/0") == "redis://***@h/0"
    assert doctor.redact_url("unix:///run/x.sock") == "unix:///run/x.sock"


@pytest.mark.engine
def test_engine_and_worker_image_with_a_real_engine(tmp_path):
    import docker

    url = os.environ.get("DOCKER_HOST") or "unix:///run/waorch-podman.sock"
    image = os.environ.get("WAORCH_TEST_IMAGE", "localhost/waorch-test:1")
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
        client.ping()
        client.images.get(image)
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it means the same: no engine here
        message = f"container engine not usable at {url}: {exc.__class__.__name__} (scripts/setup-engine.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    conf = dataclasses.replace(settings.load(), runner="docker", docker_host=url, worker_image=image)
    engine, present = doctor.check_engine(conf)
    assert engine.level == "OK" and "answers (version" in engine.detail
    assert present.level == "OK" and image in present.detail
    missing = doctor.check_engine(dataclasses.replace(conf, worker_image="localhost/waorch-none:0"))[1]
    assert missing.level == "FAIL" and "is not on the engine" in missing.detail
    assert "worker_container/Dockerfile" in missing.fix
