"""The `swarm` runner: one replicated service (replicas 1) per session on a Docker Swarm manager.

Service `wa_session_<id>`, labels waorch.session / waorch.phone / waorch.env (a hash of the task
spec, so a changed proxy means an update), the same worker environment as the docker runner
(secrets in the environment, never in labels), restart policy `any`, read-only root file system
with a tmpfs /tmp, every capability dropped, memory and pids limits.

Placement: Swarm's scheduler already spreads services over nodes (fewest tasks first). A per-node
cap on sessions comes from a generic resource: with WAORCH_SWARM_SLOT_RESOURCE=waorch-session, each
service reserves one, and a node started with `--node-generic-resource waorch-session=N` takes at
most N sessions (Swarm's `max_replicas` counts one service's replicas per node, so it cannot cap
single-replica services). A session whose record has `node_labels` (`zone=eu,disk=ssd`) only runs
on nodes with those labels; WAORCH_SWARM_CONSTRAINTS adds constraints for every session.

Session data: `volume` (default) mounts a named volume `wa_session_<id>` at /app/sessions on
whichever node runs the task (the session store must then be off the node: WAORCH_SESSION_STORE);
`bind` mounts <WAORCH_DATA_DIR>/sessions/<id>, which must exist on every node (shared storage).
The kernel of the test machines has no IPVS: services use endpoint mode dnsrr and publish no ports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shlex

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from waorch.core import settings
from waorch.runners.base import EXITED, RUNNING, STARTING, Runner, RunnerUnavailable
from waorch.runners.docker import LABEL_ENV, LABEL_PHONE, LABEL_SESSION, container_name, parse_mounts
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)

CONTAINER_SESSIONS_DIR = "/app/sessions"
STOP_GRACE_NS = 10 * 10**9  # the worker stops cleanly within ~10 s
RESTART_DELAY_NS = 5 * 10**9
DATA_MODES = ("volume", "bind")
_NODE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}=[A-Za-z0-9_.:/-]{1,128}$")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def service_name(session_id: str) -> str:
    return container_name(session_id)


def parse_bytes(text: str) -> int:
    """`512m`, `1g`, `1048576` into bytes (0 for empty: no limit)."""
    if not text.strip():
        return 0
    match = re.fullmatch(r"\s*(\d+)\s*([bkmg]?)b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size like 512m or 1g")
    return int(match.group(1)) * _UNITS[match.group(2)]


def node_label_constraints(text: str) -> list[str]:
    """`zone=eu,disk=ssd` (a session's `node_labels`) into Swarm placement constraints."""
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    bad = [item for item in items if not _NODE_LABEL.match(item)]
    if bad:
        raise ValueError(f"node_labels entries must be key=value, not {bad!r}")
    return [f"node.labels.{key}=={value}" for key, value in (item.split("=", 1) for item in items)]


class SwarmRunner(Runner):
    name = "swarm"

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            conf = settings.get()
            host = conf.swarm_host or conf.docker_host
            try:
                self._client = (docker.DockerClient(base_url=host, timeout=60) if host
                                else docker.from_env(timeout=60))
            except DockerException as exc:
                raise RunnerUnavailable(f"swarm manager unreachable: {exc.__class__.__name__}") from None
        return self._client

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotFound:
            raise
        except (DockerException, OSError) as exc:
            raise RunnerUnavailable(f"swarm manager error: {_describe(exc)}") from None

    def _inspect(self, session_id: str) -> dict | None:
        try:
            return self._call(self.client.api.inspect_service, service_name(session_id))
        except NotFound:
            return None

    # --- the spec ------------------------------------------------------------------------------

    def _spec(self, session: dict) -> tuple[dict, str]:
        """(keyword arguments of create/update_service, digest of everything that defines the task)."""
        conf = settings.get()
        env = sessions.worker_environment(session, sessions_dir=CONTAINER_SESSIONS_DIR)
        try:
            constraints = [c.strip() for c in conf.swarm_constraints.split(",") if c.strip()]
            constraints += node_label_constraints(session.get("node_labels", ""))
            memory = parse_bytes(conf.worker_memory)
        except ValueError as exc:
            raise RunnerUnavailable(f"session {session['id']}: {exc}") from None
        if conf.swarm_data not in DATA_MODES:
            raise RunnerUnavailable(f"WAORCH_SWARM_DATA must be one of {DATA_MODES}, not {conf.swarm_data!r}")
        mounts = [Mount(target, source, type="bind", read_only=spec["mode"] == "ro")
                  for source, spec in parse_mounts(conf.docker_mounts).items() for target in [spec["bind"]]]
        if conf.swarm_data == "volume":
            mounts.append(Mount(CONTAINER_SESSIONS_DIR, service_name(session["id"]), type="volume",
                                labels={LABEL_SESSION: session["id"]}))
        else:
            data_dir = sessions.sessions_root() / session["id"]
            data_dir.mkdir(parents=True, exist_ok=True)  # this node only: other nodes share storage
            mounts.append(Mount(f"{CONTAINER_SESSIONS_DIR}/{session['id']}", str(data_dir), type="bind"))
        mounts.append(Mount("/tmp", None, type="tmpfs"))
        container = ContainerSpec(
            conf.worker_image, command=shlex.split(conf.worker_command) if conf.worker_command else None,
            env=env, labels={LABEL_SESSION: session["id"]}, mounts=mounts, read_only=True,
            stop_signal="SIGTERM", stop_grace_period=STOP_GRACE_NS, cap_drop=["ALL"])
        resources = Resources(mem_limit=memory or None, generic_resources=(
            {conf.swarm_slot_resource: 1} if conf.swarm_slot_resource else None))
        if conf.worker_pids > 0:
            resources.setdefault("Limits", {})["Pids"] = conf.worker_pids
        network = conf.docker_network or "host"
        template = TaskTemplate(
            container, resources=resources, networks=[network],
            restart_policy=RestartPolicy(condition="any", delay=RESTART_DELAY_NS),
            placement=Placement(constraints=constraints or None))
        digest = hashlib.sha256(json.dumps([template, session["phone"]], sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
        kwargs = {
            "task_template": template, "name": service_name(session["id"]),
            "labels": {LABEL_SESSION: session["id"], LABEL_PHONE: session["phone"], LABEL_ENV: digest},
            "mode": ServiceMode("replicated", replicas=1),
            "endpoint_spec": EndpointSpec(mode="dnsrr"),
        }
        return kwargs, digest

    # --- the interface -------------------------------------------------------------------------

    def start(self, session: dict) -> None:
        kwargs, digest = self._spec(session)
        current = self._inspect(session["id"])
        if current is None:
            self._create(kwargs)
            return
        spec = current["Spec"]
        if spec.get("Labels", {}).get(LABEL_ENV) == digest:
            if _replicas(spec) != 1:
                self._scale(session["id"], 1)
            return
        self._update(current, kwargs)  # Swarm's default update order: the old task stops first

    def _create(self, kwargs: dict) -> None:
        try:
            self._call(self.client.api.create_service, **kwargs)
        except APIError as exc:
            if exc.status_code == 409:  # created meanwhile by another caller: theirs stands
                return
            raise RunnerUnavailable(f"swarm manager error: {_describe(exc)}") from None

    def _update(self, current: dict, kwargs: dict, force: bool = False) -> None:
        template = kwargs["task_template"]
        if force:
            previous = current["Spec"].get("TaskTemplate", {}).get("ForceUpdate", 0)
            template["ForceUpdate"] = previous + 1
        self._call(self.client.api.update_service, current["ID"], current["Version"]["Index"], **kwargs)

    def _scale(self, session_id: str, replicas: int) -> None:
        current = self._inspect(session_id)
        if current is None or _replicas(current["Spec"]) == replicas:
            return
        self._call(self.client.api.update_service, current["ID"], current["Version"]["Index"],
                   mode=ServiceMode("replicated", replicas=replicas), fetch_current_spec=True)

    def stop(self, session_id: str) -> None:
        with contextlib.suppress(NotFound):  # removed meanwhile: stopped all the same
            self._scale(session_id, 0)

    def restart(self, session: dict) -> None:
        kwargs, _ = self._spec(session)
        current = self._inspect(session["id"])
        if current is None:
            self._create(kwargs)
        else:
            self._update(current, kwargs, force=True)  # a new task even when nothing changed

    def remove(self, session_id: str) -> None:
        # Swarm stops the task (SIGTERM, then the grace period) after the service is gone; the
        # named volume with the session's data stays on its node.
        with contextlib.suppress(NotFound):
            self._call(self.client.api.remove_service, service_name(session_id))

    def list(self) -> dict[str, str]:
        found = self._call(self.client.api.services, filters={"label": LABEL_SESSION})
        tasks = self._call(self.client.api.tasks, filters={"desired-state": "running"})
        running = {t["ServiceID"] for t in tasks if t.get("Status", {}).get("State") == "running"}
        states = {}
        for service in found:
            spec = service["Spec"]
            if _replicas(spec) == 0:
                state = EXITED
            elif service["ID"] in running:
                state = RUNNING
            else:
                state = STARTING  # Swarm is placing, pulling, starting or restarting its task
            states[spec["Labels"][LABEL_SESSION]] = state
        return states


def _replicas(spec: dict) -> int:
    return int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0))


def _describe(exc: BaseException) -> str:
    # APIError texts can carry the request URL and body; the explanation is enough.
    if isinstance(exc, APIError):
        return str(exc.explanation or exc.status_code)[:200]
    return exc.__class__.__name__
