"""docker-compose.yml as Docker Compose itself reads it (`docker compose config`).

Compose comes from scripts/setup-compose.sh; skipped when it is missing, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from waorch.metrics.collector import CELERY_QUEUES

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
WAORCH_SERVICES = {"gateway", "worker", "orchestrator", "events", "beat", "flower"}
SOCKET = "/var/run/docker.sock"


def compose_command() -> list[str]:
    plugin = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins" / "docker-compose"
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if plugin.exists():
        candidates.append([str(plugin)])  # the plugin binary also works on its own
    for argv in candidates:
        done = subprocess.run(argv + ["version"], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and "version v" in done.stdout.lower():
            return argv
    message = "Docker Compose v2+ not installed (run scripts/setup-compose.sh)"
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


def config(env_file: Path, *args: str, profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # a clean environment: only the env file may feed the interpolation
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_CONFIG")}
    selected = [arg for p in profiles for arg in ("--profile", p)]
    return subprocess.run(compose_command() + ["--env-file", str(env_file), "-f", str(COMPOSE_FILE),
                                               *selected, "config", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def rendered() -> dict:
    done = config(ENV_EXAMPLE, profiles=("build",))
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def mounts(service: dict) -> list[tuple[str, str]]:
    return [(v.get("source", ""), v.get("target", "")) for v in service.get("volumes", [])]


def test_services_and_redis_persistence(rendered):
    services = rendered["services"]
    assert set(services) >= WAORCH_SERVICES | {"redis", "worker-image"}
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--requirepass") + 1] == "change-me-redis-password"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert ("redis-data", "/data") in mounts(services["redis"])
    for name in WAORCH_SERVICES:
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://:change-me-redis-password@redis:6379/0"
        assert env["WAORCH_RUNNER"] == "docker"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "ports" not in services["redis"]  # Redis is reachable from the project network only


def test_docker_socket_only_in_the_orchestrator(rendered):
    services = rendered["services"]
    holding = {name for name, svc in services.items()
               if any(SOCKET in source or SOCKET in target for source, target in mounts(svc))}
    assert holding == {"orchestrator"}
    assert "orchestrator" in services["orchestrator"]["command"][services["orchestrator"]["command"]
                                                                   .index("--queues") + 1]
    data = services["orchestrator"]["environment"]["WAORCH_DATA_DIR"]
    assert (data, data) in mounts(services["orchestrator"])  # same path inside: the engine binds it


def test_queues_workers_beat_and_flower(rendered):
    services = rendered["services"]

    def queues(name: str) -> set[str]:
        command = services[name]["command"]
        return set(command[command.index("--queues") + 1].split(","))

    # every queue celeryconfig declares has a consumer (read in a child: importing celeryconfig
    # here would fix the broker URL of this test process)
    declared = subprocess.run([sys.executable, "-c", "import celeryconfig; "
                               "print(' '.join(q.name for q in celeryconfig.task_queues))"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    assert queues("worker") | queues("orchestrator") | queues("events") == set(declared.stdout.split())
    assert set(CELERY_QUEUES) == set(declared.stdout.split())  # what /metrics and doctor watch
    assert queues("events") == {"events"}
    assert services["beat"]["command"][0] == "beat"
    assert services["flower"]["environment"]["WAORCH_FLOWER_BASIC_AUTH"] == "admin:change-me-flower-password"
    # the Flower password and the metrics token go to no other service
    for name in WAORCH_SERVICES - {"flower"}:
        assert "WAORCH_FLOWER_BASIC_AUTH" not in services[name]["environment"]
    for name in ("gateway", "flower"):
        assert all(p["host_ip"] == "127.0.0.1" for p in services[name]["ports"])


def test_worker_image_is_built_on_demand_only(rendered):
    started_by_up = config(ENV_EXAMPLE, "--services")
    assert started_by_up.returncode == 0, started_by_up.stderr
    assert set(started_by_up.stdout.split()) == WAORCH_SERVICES | {"redis"}
    image = rendered["services"]["worker-image"]
    assert image["profiles"] == ["build"]
    assert image["build"]["dockerfile"] == "worker_container/Dockerfile"
    assert rendered["services"]["gateway"]["build"]["dockerfile"] == "Dockerfile"


def test_missing_secrets_are_refused(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = config(empty)
    assert done.returncode != 0
    assert "REDIS_PASSWORD" in done.stderr
