"""Redis Sentinel for tests: one primary, one replica and three sentinels on free 127.0.0.1 ports.

Each process is `redis-server` with its own config file in a temp directory (sentinels as
`redis-server <conf> --sentinel`, which is what Debian's redis-sentinel runs; sentinels rewrite
their file). Timings are small so a failover takes a few seconds (DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS):
- down-after-milliseconds 1000: a primary that does not answer PING for 1 s is subjectively down;
  with a quorum of 2 it is objectively down and an election starts (up to 1 s random delay).
- failover-timeout 5000: a leader whose failover makes no progress gives up after 5 s, and the
  next attempt on the same master may start after twice that; generous enough not to abort a
  promotion on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from waorch.launcher.redis_server import free_port, redis_binary

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
QUORUM = 2
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class RedisProcess:
    """One redis-server (data node or sentinel) with its config file."""

    name: str
    port: int
    directory: Path
    config: str
    sentinel: bool = False
    password: str | None = None
    process: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.name}.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self) -> RedisProcess:
        if not self.config_path.exists():  # a restart keeps what a sentinel rewrote
            self.config_path.write_text(self.config)
        argv = [redis_binary(), str(self.config_path)] + (["--sentinel"] if self.sentinel else [])
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        return self

    def client(self, timeout: float = 2.0) -> redis.Redis:
        password = None if self.sentinel else self.password
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, decode_responses=True,
                           socket_connect_timeout=timeout, socket_timeout=timeout)

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        client = self.client(timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it: the port is closed when this returns."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""


def _data_node_config(node: str, port: int, directory: Path, password: str | None,
                      replica_of: int | None, extra: dict[str, str]) -> str:
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {directory}", f"logfile {directory / node}.log",
             "daemonize no", 'save ""', "appendonly no",
             # full syncs straight over the socket, with no wait for more replicas to join
             "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
    if password:
        lines += [f"requirepass {password}", f"masterauth {password}"]
    if replica_of is not None:
        lines.append(f"replicaof 127.0.0.1 {replica_of}")
    lines += [f"{key} {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def _sentinel_config(node: str, port: int, directory: Path, primary_port: int, password: str | None,
                     down_after_ms: int, failover_timeout_ms: int) -> str:
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {directory}", f"logfile {directory / node}.log",
             "daemonize no",
             f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}",
             f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
             f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
             f"sentinel parallel-syncs {MASTER_NAME} 1"]
    if password:
        lines.append(f"sentinel auth-pass {MASTER_NAME} {password}")
    return "\n".join(lines) + "\n"


@dataclass
class SentinelSetup:
    """The running topology. `primary`/`replica` are the roles at start; a failover swaps them."""

    directory: Path
    primary: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]
    password: str | None = None
    failovers: list[float] = field(default_factory=list)

    def url(self, db: int = 0) -> str:
        """REDIS_URL in the Sentinel form for this setup."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/{db}"

    def nodes(self) -> list[RedisProcess]:
        return [self.primary, self.replica, *self.sentinels]

    def master_as_seen(self) -> list[int | None]:
        """The primary's port according to each sentinel (None: no answer)."""
        ports: list[int | None] = []
        for sentinel in self.sentinels:
            client = sentinel.client(timeout=1.0)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                ports.append(int(address[1]) if address else None)
            except (redis.RedisError, OSError):
                ports.append(None)
            finally:
                client.close()
        return ports

    def role(self, node: RedisProcess) -> dict:
        client = node.client()
        try:
            return client.info("replication")
        finally:
            client.close()

    def _sentinels_settled(self, primary_port: int, replicas: int) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client(timeout=1.0)
            try:
                state = client.sentinel_master(MASTER_NAME)
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
            if int(state["port"]) != primary_port or not state["is_master"] or state["is_sdown"]:
                return False
            if state["num-slaves"] < replicas or state["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
        return True

    def _replica_in_sync(self, replica: RedisProcess, primary_port: int) -> bool:
        try:
            info = self.role(replica)
        except (redis.RedisError, OSError):
            return False
        return (info.get("role") == "slave" and int(info.get("master_port", 0)) == primary_port
                and info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"))

    def wait_settled(self, timeout: float = 60) -> None:
        """Until the replica is in sync and every sentinel knows the primary, the replica and
        the other sentinels."""
        deadline = time.monotonic() + timeout
        while not (self._replica_in_sync(self.replica, self.primary.port)
                   and self._sentinels_settled(self.primary.port, replicas=1)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinel setup not settled after {timeout}s:\n"
                                   + "\n".join(f"--- {n.name}\n{n.log_tail(1500)}" for n in self.nodes()))
            for node in self.nodes():
                if not node.alive():
                    raise RuntimeError(f"{node.name} exited:\n{node.log_tail()}")
            time.sleep(0.1)

    def kill_primary(self) -> float:
        """kill -9 the current primary; returns the monotonic time of the kill."""
        killed_at = time.monotonic()
        self.primary.kill()
        return killed_at

    def wait_for_new_primary(self, killed_at: float, timeout: float = 60) -> float:
        """Until every sentinel names the replica as primary and it says it is one; then swap
        roles and return the seconds since `killed_at`."""
        new, old = self.replica, self.primary
        deadline = time.monotonic() + timeout
        while True:
            if all(port == new.port for port in self.master_as_seen()):
                with contextlib.suppress(redis.RedisError, OSError):
                    if self.role(new).get("role") == "master":
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new primary {timeout}s after the kill:\n"
                                   + "\n".join(f"--- {s.name}\n{s.log_tail(1500)}" for s in self.sentinels))
            time.sleep(0.05)
        elapsed = time.monotonic() - killed_at
        self.primary, self.replica = new, old
        self.failovers.append(elapsed)
        return elapsed

    def restart_old_primary(self, timeout: float = 60) -> None:
        """Start the killed node again; the sentinels turn it into a replica of the new primary."""
        self.replica.start()
        deadline = time.monotonic() + timeout
        while not self._replica_in_sync(self.replica, self.primary.port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"old primary did not rejoin as a replica:\n{self.replica.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes():
            node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelSetup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_sentinel_setup(directory: Path | None = None, password: str | None = None,
                         down_after_ms: int = DOWN_AFTER_MS, failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
                         data_config: dict[str, str] | None = None, timeout: float = 60) -> SentinelSetup:
    """Start primary, replica (in sync), then three sentinels; return once all agree.

    `data_config` adds redis.conf lines to both data nodes (e.g. min-replicas-to-write)."""
    directory = Path(directory or tempfile.mkdtemp(prefix="waorch-sentinel-"))
    directory.mkdir(parents=True, exist_ok=True)
    extra = data_config or {}
    ports = [free_port() for _ in range(5)]
    while len(set(ports)) < 5:
        ports = [free_port() for _ in range(5)]
    primary_port, replica_port, *sentinel_ports = ports
    primary = RedisProcess("primary", primary_port, directory,
                           _data_node_config("primary", primary_port, directory, password, None, extra),
                           password=password)
    replica = RedisProcess("replica", replica_port, directory,
                           _data_node_config("replica", replica_port, directory, password, primary_port,
                                             extra), password=password)
    sentinels = [RedisProcess(f"sentinel{i}", port, directory,
                              _sentinel_config(f"sentinel{i}", port, directory, primary_port, password,
                                               down_after_ms, failover_timeout_ms), sentinel=True)
                 for i, port in enumerate(sentinel_ports)]
    setup = SentinelSetup(directory, primary, replica, sentinels, password)
    try:
        primary.start()
        replica.start()
        deadline = time.monotonic() + timeout
        # sentinels started after the replica is in sync see it in their first INFO of the
        # primary, instead of at the next one (every 10 s)
        while not setup._replica_in_sync(replica, primary_port):
            for node in (primary, replica):
                if not node.alive():
                    raise RuntimeError(f"{node.name} exited:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica not in sync after {timeout}s:\n{replica.log_tail()}")
            time.sleep(0.05)
        for sentinel in sentinels:
            sentinel.start()
        setup.wait_settled(max(1.0, deadline - time.monotonic()))
    except BaseException:
        setup.stop()
        raise
    return setup
