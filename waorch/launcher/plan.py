"""What `waorch run` starts: one ChildSpec per process, with ports and a shared environment."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from waorch.core.redis_client import get_redis
from waorch.launcher import readiness
from waorch.launcher.children import ChildSpec
from waorch.launcher.ports import pick
from waorch.launcher.redis_server import reachable
from waorch.launcher.state import StateDir
from waorch.runners.process import HEARTBEAT

DEMO_PROXY_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DEMO_PROXY_USER = "demo"
DEMO_SCAN_AFTER = 3.0
# Celery queues of the general workers; `events` (client webhooks) has a worker of its own.
GENERAL_QUEUES = "dispatch,orchestrator,maintenance"
# `waorch <name>` as a child: the same interpreter, whether or not the console script is on PATH.
_CLI = ("-c", "import sys; from waorch.cli.main import cli; sys.exit(cli(prog_name='waorch'))")


class ChildWatch(Protocol):
    """What readiness checks may ask the launcher about its children."""

    def log_says(self, name: str, text: str) -> bool: ...

    def pid_of(self, name: str) -> int | None: ...


@dataclass
class RunOptions:
    state_dir: Path
    port: int
    bind: str = "127.0.0.1"
    policy: Path | None = None
    workers: int = 1
    sim: bool = True
    demo: bool = False


@dataclass
class Endpoints:
    """Every address the launcher hands out, chosen before anything starts."""

    bind: str
    port: int
    flower_port: int
    sim_port: int | None
    wire_port: int | None
    proxies: list[tuple[str, int]] = field(default_factory=list)
    # `--no-sim` with WAORCH_SIM_URL and WAORCH_SIM_WIRE: a simulator started elsewhere
    external_sim_url: str = ""
    external_sim_wire: str = ""

    @property
    def public_host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind

    @property
    def api_root(self) -> str:
        return f"http://{self.public_host}:{self.port}"

    @property
    def flower_url(self) -> str:
        return f"http://{self.public_host}:{self.flower_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}" if self.sim_port else self.external_sim_url

    @property
    def sim_wire(self) -> str:
        return f"127.0.0.1:{self.wire_port}" if self.wire_port else self.external_sim_wire

    @property
    def sim_is_external(self) -> bool:
        return bool(self.external_sim_url)


def external_simulator() -> tuple[str, str]:
    """(WAORCH_SIM_URL, WAORCH_SIM_WIRE) of a simulator started elsewhere (`waorch sim` on one
    host, shared by every host's `waorch run --no-sim`: SPEC section 11); ("", "") when unset.
    Both or neither: a ValueError names the missing one."""
    url, wire = os.environ.get("WAORCH_SIM_URL", "").strip(), os.environ.get("WAORCH_SIM_WIRE", "").strip()
    if bool(url) != bool(wire):
        missing = "WAORCH_SIM_WIRE" if url else "WAORCH_SIM_URL"
        raise ValueError("an external simulator needs both WAORCH_SIM_URL and WAORCH_SIM_WIRE; "
                         f"{missing} is unset")
    return url.rstrip("/"), wire


def command_available(name: str) -> bool:
    """Whether `waorch <name>` exists in this build (some processes land later than others)."""
    return importlib.util.find_spec(f"waorch.cli.{name}") is not None


def waorch_argv(*args: str) -> list[str]:
    return [sys.executable, *_CLI, *args]


def choose_endpoints(options: RunOptions) -> Endpoints:
    taken = {options.port}
    bind = options.bind
    flower_default = int(os.environ["WAORCH_FLOWER_PORT"]) if os.environ.get("WAORCH_FLOWER_PORT") \
        else options.port + 1
    endpoints = Endpoints(bind=bind, port=options.port, flower_port=pick(bind, flower_default, taken),
                          sim_port=None, wire_port=None)
    if options.sim:
        endpoints.sim_port = pick("127.0.0.1", options.port + 2, taken)
        endpoints.wire_port = pick("127.0.0.1", options.port + 3, taken)
    else:
        endpoints.external_sim_url, endpoints.external_sim_wire = external_simulator()
    if options.demo:
        for host in DEMO_PROXY_HOSTS:
            endpoints.proxies.append((host, pick(host, 1080, set())))
    return endpoints


def child_environment(options: RunOptions, state: StateDir, endpoints: Endpoints, redis_url: str,
                      secret_key: str) -> dict[str, str]:
    """The environment every child gets (and the launcher itself uses for bootstrapping)."""
    env = dict(os.environ)
    env.pop("WAORCH_FLOWER_BASIC_AUTH", None)  # only Flower gets its password
    env.update({
        "REDIS_URL": redis_url,
        "WAORCH_STATE_DIR": str(state.root),
        "WAORCH_DATA_DIR": str(state.data),
        "WAORCH_BIND": endpoints.bind,
        "WAORCH_PORT": str(endpoints.port),
        "WAORCH_PUBLIC_URL": endpoints.api_root,
        "WAORCH_SECRET_KEY": secret_key,
        "WAORCH_FLOWER_PORT": str(endpoints.flower_port),
        "WAORCH_SIM_URL": endpoints.sim_url,
        "WAORCH_SIM_WIRE": endpoints.sim_wire,
        "WAORCH_RUNNER": os.environ.get("WAORCH_RUNNER", "process"),
        "WAORCH_TRANSPORT": os.environ.get("WAORCH_TRANSPORT",
                                           "sim" if options.sim or endpoints.sim_is_external else "neonize"),
        "PYTHONUNBUFFERED": "1",
    })
    if options.policy:
        env["WAORCH_POLICY_FILE"] = str(options.policy)
    return env


def redis_spec(binary: str, state: StateDir, port: int, env: dict[str, str]) -> ChildSpec:
    url = f"redis://127.0.0.1:{port}/0"
    # AOF in the state dir: a re-run finds its sessions, messages and keys again.
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(state.redis),
            "--appendonly", "yes", "--save", "", "--daemonize", "no"]
    return ChildSpec("redis", argv, env, ready=lambda: reachable(url, timeout=0.5), stop_tier=9,
                     stop_timeout=20)


def supervisor_heartbeat_pid(redis_url: str) -> int | None:
    """The pid the running supervisor last reported in Redis, if any."""
    try:
        value = get_redis(redis_url).get(HEARTBEAT)
    except Exception:  # noqa: BLE001  (Redis hiccup: not ready yet)
        return None
    return int(value) if value and value.isdigit() else None


def process_specs(options: RunOptions, state: StateDir, endpoints: Endpoints, env: dict[str, str],
                  flower_auth: str, socks_password: str,
                  watch: ChildWatch) -> tuple[list[ChildSpec], list[str]]:
    """The processes to start, and notes about the ones this build cannot start."""
    specs: list[ChildSpec] = []
    skipped: list[str] = []
    api = endpoints.api_root
    specs.append(ChildSpec(
        # Short grace: a claim long-poll cut short only leaves a lease that expires by itself.
        "gateway", waorch_argv("gateway", "--bind", endpoints.bind, "--port", str(endpoints.port),
                               "--graceful-timeout", "5"), env,
        ready=lambda: readiness.http_answers(f"{api}/api/health"), stop_timeout=25))
    host = socket.gethostname()
    for index in range(1, options.workers + 1):
        node = f"w{index}.{os.getpid()}@{host}"
        specs.append(ChildSpec(
            f"worker-{index}", waorch_argv("worker", "--name", node, "--queues", GENERAL_QUEUES), env,
            ready=lambda node=node: readiness.celery_pong(env["REDIS_URL"], node), stop_timeout=25))
    # Client webhook deliveries get their own worker: a slow or hanging client endpoint can only
    # hold up other clients' events, never dispatch, orchestration or maintenance.
    events_node = f"events.{os.getpid()}@{host}"
    specs.append(ChildSpec(
        "worker-events", waorch_argv("worker", "--name", events_node, "--queues", "events"), env,
        ready=lambda: readiness.celery_pong(env["REDIS_URL"], events_node), stop_timeout=25))
    specs.append(ChildSpec(
        "beat", waorch_argv("beat", "--schedule-file", str(state.root / "celerybeat-schedule")), env,
        ready=lambda: watch.log_says("beat", "beat: Starting")))
    flower_env = {**env, "WAORCH_FLOWER_BASIC_AUTH": flower_auth}
    specs.append(ChildSpec(
        "flower", waorch_argv("flower", "--address", endpoints.bind, "--port", str(endpoints.flower_port)),
        flower_env, ready=lambda: readiness.http_answers(endpoints.flower_url, (401,))))
    if options.sim:
        if command_available("sim"):
            # Its own directory in the state dir: pairings and messages outlive a restart.
            args = ["sim", "--host", "127.0.0.1", "--port", str(endpoints.sim_port),
                    "--wire-port", str(endpoints.wire_port), "--state-dir", str(state.root / "sim")]
            if options.demo:
                args += ["--demo-scan-after", str(DEMO_SCAN_AFTER)]
            specs.append(ChildSpec("sim", waorch_argv(*args), env, ready=readiness.all_of(
                lambda: readiness.port_open("127.0.0.1", endpoints.sim_port),
                lambda: readiness.port_open("127.0.0.1", endpoints.wire_port))))
        else:
            skipped.append("simulator (`waorch sim` is not in this build)")
    if options.demo:
        listens = [arg for h, p in endpoints.proxies for arg in ("--listen", f"{h}:{p}")]
        specs.append(ChildSpec(
            "socks", waorch_argv("socks", *listens, "--user", DEMO_PROXY_USER),
            {**env, "WAORCH_SOCKS_PASSWORD": socks_password},
            ready=readiness.all_of(*[lambda h=h, p=p: readiness.port_open(h, p)
                                     for h, p in endpoints.proxies])))
    if command_available("supervisor"):
        specs.append(ChildSpec(
            "supervisor", waorch_argv("supervisor"), env, stop_tier=0, stop_timeout=25,
            ready=lambda: supervisor_heartbeat_pid(env["REDIS_URL"]) == watch.pid_of("supervisor")))
    else:
        skipped.append("process runner (`waorch supervisor` is not in this build)")
    return specs, skipped
