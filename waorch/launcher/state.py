"""The files `waorch run` keeps in its state directory: secrets (mode 600), run.json, a lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from pathlib import Path

import redis

from waorch.core.files import write_private
from waorch.tenants import apikeys

RUN_FILE = "run.json"
SECRET_FILE = "secret_key"
FLOWER_AUTH_FILE = "flower_auth"
API_KEY_FILE = "api_key"
SOCKS_PASSWORD_FILE = "demo_proxy_password"
LOCK_FILE = "launcher.lock"
DEMO_TENANT = "default"


class StateDirBusy(RuntimeError):
    """Another `waorch run` holds this state directory."""


def read_private(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


class StateDir:
    """Paths and persistent secrets of one `waorch run` installation."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self._lock_handle = None

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    def prepare(self) -> None:
        for path in (self.root, self.logs, self.data, self.redis):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def lock(self) -> None:
        """Hold an exclusive lock for this process's lifetime; StateDirBusy if taken."""
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115  (kept open while running)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise StateDirBusy(f"another `waorch run` (pid {holder}) uses {self.root}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def secret_key(self) -> str:
        """The master secret: WAORCH_SECRET_KEY if set, else the one generated on the first run."""
        from_env = os.environ.get("WAORCH_SECRET_KEY")
        if from_env:
            return from_env
        path = self.root / SECRET_FILE
        existing = read_private(path)
        if existing:
            return existing
        key = secrets.token_urlsafe(48)
        write_private(path, key + "\n")
        return key

    def flower_auth(self) -> tuple[str, bool]:
        """(user:password, created now?) for Flower's basic auth."""
        path = self.root / FLOWER_AUTH_FILE
        existing = read_private(path)
        if existing and ":" in existing:
            return existing, False
        auth = f"admin:{secrets.token_urlsafe(18)}"
        write_private(path, auth + "\n")
        return auth, True

    def socks_password(self) -> str:
        """Password of the demo proxies; kept so their URLs, and so stickiness, survive re-runs."""
        path = self.root / SOCKS_PASSWORD_FILE
        existing = read_private(path)
        if existing:
            return existing
        password = secrets.token_urlsafe(12)
        write_private(path, password + "\n")
        return password

    def admin_key(self, r: redis.Redis, tenant: str = DEMO_TENANT) -> tuple[str, bool]:
        """(raw admin key, created now?): the remembered key while Redis still knows it."""
        path = self.root / API_KEY_FILE
        existing = read_private(path)
        if existing:
            principal = apikeys.lookup(r, existing)
            if principal is not None and principal.is_admin:
                return existing, False
        key = apikeys.create_key(r, tenant, frozenset({"send", "read", "admin"}), label="waorch run")
        write_private(path, key + "\n")
        return key, True

    def write_run_file(self, info: dict) -> None:
        write_private(self.run_file, json.dumps(info, indent=2) + "\n")

    def remove_run_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.run_file.unlink()
