"""The `docker` runner: one container per session through the Docker Engine API (docker SDK).

Container `wa_session_<id>`, labels waorch.session / waorch.phone / waorch.env (hash of the
environment, so a changed proxy means a new container), restart policy unless-stopped, the
session's data directory mounted at /app/sessions/<id>, network mode WAORCH_DOCKER_NETWORK.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound

from waorch.core import settings
from waorch.runners.base import EXITED, RUNNING, STARTING, Runner, RunnerUnavailable
from waorch.sessions import registry as sessions

CONTAINER_SESSIONS_DIR = "/app/sessions"
LABEL_SESSION = "waorch.session"
LABEL_PHONE = "waorch.phone"
LABEL_ENV = "waorch.env"
STOP_TIMEOUT = 10
_STATES = {"running": RUNNING, "created": STARTING, "restarting": STARTING}


def container_name(session_id: str) -> str:
    return f"wa_session_{session_id}"


def parse_mounts(text: str) -> dict[str, dict]:
    """`host:container[:ro|rw],...` into the docker SDK's `volumes` mapping."""
    volumes: dict[str, dict] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split(":")
        mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
        if not mode_ok or not parts[0] or not parts[1]:
            raise ValueError(f"WAORCH_DOCKER_MOUNTS entry {item!r} is not host:container[:ro|rw]")
        volumes[parts[0]] = {"bind": parts[1], "mode": parts[2] if len(parts) == 3 else "rw"}
    return volumes


class DockerRunner(Runner):
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            host = settings.get().docker_host
            try:
                self._client = docker.DockerClient(base_url=host, timeout=60) if host else docker.from_env(
                    timeout=60)
            except DockerException as exc:
                raise RunnerUnavailable(f"container engine unreachable: {exc.__class__.__name__}") from None
        return self._client

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotFound:
            raise
        except (DockerException, OSError) as exc:
            raise RunnerUnavailable(f"container engine error: {_describe(exc)}") from None

    def _get(self, session_id: str):
        try:
            return self._call(self.client.containers.get, container_name(session_id))
        except NotFound:
            return None

    def start(self, session: dict) -> None:
        env = sessions.worker_environment(session, sessions_dir=CONTAINER_SESSIONS_DIR)
        digest = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
        container = self._get(session["id"])
        if container is not None:
            if container.labels.get(LABEL_ENV) == digest:
                if container.status != "running":
                    self._call(container.start)
                return
            self._call(container.remove, force=True)
        self._create(session, env, digest)

    def _create(self, session: dict, env: dict[str, str], digest: str) -> None:
        conf = settings.get()
        data_dir = sessions.sessions_root() / session["id"]
        data_dir.mkdir(parents=True, exist_ok=True)
        volumes = parse_mounts(conf.docker_mounts)
        volumes[str(data_dir)] = {"bind": f"{CONTAINER_SESSIONS_DIR}/{session['id']}", "mode": "rw"}
        command = shlex.split(conf.worker_command) if conf.worker_command else None
        try:
            self._call(
                self.client.containers.run, conf.worker_image, command=command, detach=True,
                name=container_name(session["id"]), environment=env, volumes=volumes,
                labels={LABEL_SESSION: session["id"], LABEL_PHONE: session["phone"], LABEL_ENV: digest},
                network_mode=conf.docker_network, restart_policy={"Name": "unless-stopped"},
                stop_signal="SIGTERM")
        except NotFound as exc:  # the image
            raise RunnerUnavailable(f"worker image {conf.worker_image!r} not found: "
                                    f"{_describe(exc)}") from None

    def stop(self, session_id: str) -> None:
        container = self._get(session_id)
        if container is not None and container.status == "running":
            with contextlib.suppress(NotFound):  # removed meanwhile: stopped all the same
                self._call(container.stop, timeout=STOP_TIMEOUT)

    def restart(self, session: dict) -> None:
        self.remove(session["id"])
        self.start(session)

    def remove(self, session_id: str) -> None:
        container = self._get(session_id)
        if container is None:
            return
        with contextlib.suppress(NotFound):  # removed meanwhile (another task, the engine)
            if container.status == "running":
                self._call(container.stop, timeout=STOP_TIMEOUT)
            self._call(container.remove, force=True)

    def list(self) -> dict[str, str]:
        # One list call, no inspect per container: the SDK's containers.list inspects each one it
        # listed, and a container removed in between (a restart or delete elsewhere) made podman
        # answer 500 "no such container", which failed the whole listing.
        found = self._call(self.client.api.containers, all=True, filters={"label": LABEL_SESSION})
        return {c["Labels"][LABEL_SESSION]: _STATES.get(c.get("State"), EXITED) for c in found}

    def data_dir(self, session_id: str) -> Path:
        return sessions.sessions_root() / session_id


def _describe(exc: BaseException) -> str:
    # APIError texts can carry the request URL and body; the explanation is enough.
    if isinstance(exc, APIError):
        return str(exc.explanation or exc.status_code)[:200]
    return exc.__class__.__name__
