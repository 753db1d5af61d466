"""A Docker Swarm of several "hosts" on this machine, for tests (root only).

Each node is a network namespace (`ip netns add`) joined by a veth to a bridge in the host's
namespace, with addresses this module creates, and runs its own dockerd started with
`nsenter --net=/run/netns/X unshare --uts dockerd ...` (`ip netns exec` remounts /sys and dockerd
then fails), with its own directories and cgroup parent. The first node is the manager; the others
join as workers. The host side of the bridge has an address too (`cluster.host_address`): services
that the nodes must reach listen there.

    cluster = SwarmCluster(tag="t1")
    try:
        cluster.up()
        cluster.load_image(source_client, "localhost/waorch-test:1")
        cluster.cut(cluster.nodes[1]); ...; cluster.restore(cluster.nodes[1])
    finally:
        cluster.teardown()

The kernel here has no IPVS: services use host networking or endpoint_mode dnsrr, no published
ports. `teardown()` works after a failed or killed run too: it finds what a cluster with the same
tag left (pid files, namespaces, links, mounts) and removes it; `python -m tests.support.swarm_cluster
down TAG` does the same by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

log = logging.getLogger(__name__)

DEFAULT_SUBNET = "10.213.47.0/24"  # private, and far from the 10.0.x.0/24 pools Swarm hands out
DEFAULT_BASE = Path("/var/tmp/waorch-swarm")
DOCKERD = "/usr/sbin/dockerd"
SWARM_PORT = 2377


class ClusterError(RuntimeError):
    """The cluster could not be brought up (the message says which step and where its log is)."""


@dataclass
class Node:
    name: str  # also the namespace, the host name and the cgroup parent
    address: str
    directory: Path
    veth_host: str  # the host-side end: setting it down cuts the node's only link
    veth_node: str
    role: str = "worker"
    node_id: str = ""
    _client: docker.DockerClient | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid_file(self) -> Path:
        return self.directory / "dockerd.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "dockerd.log"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=60)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _wait(predicate, what: str, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class SwarmCluster:
    """`size` dockerd nodes in network namespaces named `wsw<tag>n<i>`, one Swarm."""

    def __init__(self, tag: str = "t", size: int = 3, subnet: str = DEFAULT_SUBNET,
                 base_dir: Path = DEFAULT_BASE, heartbeat_seconds: float | None = None,
                 daemon_args: dict[int, list[str]] | None = None) -> None:
        if not tag.isalnum() or len(tag) > 6:
            raise ValueError("tag: up to 6 letters/digits (it goes into interface names)")
        network = ipaddress.ip_network(subnet)
        hosts = list(network.hosts())
        self.tag = tag
        self.prefix_len = network.prefixlen
        self.subnet = str(network)
        self.host_address = str(hosts[0])
        self.bridge = f"wsw{tag}br"
        self.directory = base_dir / tag
        # Swarm's default heartbeat is 5 s; a node is marked down after a few missed ones
        self.heartbeat_seconds = heartbeat_seconds
        # extra dockerd arguments by node number (1 = the manager), e.g. --node-generic-resource
        self.daemon_args = daemon_args or {}
        self._lock_fd: int | None = None
        self.nodes = [
            Node(name=f"wsw{tag}n{i}", address=str(hosts[10 + i]), directory=self.directory / f"n{i}",
                 veth_host=f"wsw{tag}h{i}", veth_node=f"wsw{tag}v{i}", role="manager" if i == 1 else "worker")
            for i in range(1, size + 1)
        ]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    # --- bring up ------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0, lock_wait: float = 900.0) -> None:
        """Namespaces, bridge, daemons, Swarm; returns when every node is Ready."""
        if os.geteuid() != 0:
            raise ClusterError("a Swarm in network namespaces needs root")
        if not Path(DOCKERD).exists():
            raise ClusterError(f"{DOCKERD} is missing (scripts/setup-dockerd.sh installs docker.io)")
        self._lock(wait=lock_wait)  # another run (another checkout) may be using this tag
        self.teardown(keep_lock=True)  # whatever an earlier, dead run with this tag left
        self._check_subnet_free()
        self._network()
        for number, node in enumerate(self.nodes, start=1):
            self._start_daemon(number, node)
        for node in self.nodes:
            _wait(lambda n=node: self._answers(n), f"dockerd of {node.name} (log {node.log_file})", timeout)
        self._form_swarm(timeout)

    def _lock(self, wait: float) -> None:
        """Hold `<base>/<tag>.lock` (flock: released by the kernel if this process dies), so that
        a second run with the same tag waits instead of tearing down a cluster in use."""
        if self._lock_fd is not None:
            return
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory.parent / f"{self.tag}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise ClusterError(f"cluster {self.tag} is in use by another run") from None
                time.sleep(1)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _check_subnet_free(self) -> None:
        mine = ipaddress.ip_network(self.subnet)
        routes = _run("ip", "-4", "-o", "route", "show").stdout.split("\n")
        for line in filter(None, routes):
            first = line.split()[0]
            if first == "default":
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(first, strict=False).overlaps(mine):
                    raise ClusterError(f"{self.subnet} overlaps a route of this machine: {line}")

    def _network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.host_address}/{self.prefix_len}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for node in self.nodes:
            _run("ip", "netns", "add", node.name)
            _run("ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_node)
            _run("ip", "link", "set", node.veth_host, "master", self.bridge)
            _run("ip", "link", "set", node.veth_host, "up")
            _run("ip", "link", "set", node.veth_node, "netns", node.name)
            in_ns = ("ip", "-n", node.name)
            _run(*in_ns, "link", "set", "lo", "up")
            _run(*in_ns, "addr", "add", f"{node.address}/{self.prefix_len}", "dev", node.veth_node)
            _run(*in_ns, "link", "set", node.veth_node, "up")
            _run(*in_ns, "route", "add", "default", "via", self.host_address)

    def _start_daemon(self, number: int, node: Node) -> None:
        for sub in ("data", "exec"):
            (node.directory / sub).mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter", f"--net=/run/netns/{node.name}", "unshare", "--uts", "--",
            "sh", "-c", 'hostname "$0" && exec "$@"', node.name,
            DOCKERD, "--host", node.url, "--data-root", str(node.directory / "data"),
            "--exec-root", str(node.directory / "exec"), "--pidfile", str(node.pid_file),
            "--cgroup-parent", f"/{node.name}", "--storage-driver", "overlay2",
            "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
            *self.daemon_args.get(number, []),
        ]
        with open(node.log_file, "ab") as log_out:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_out, stderr=log_out,
                             start_new_session=True)

    @staticmethod
    def _answers(node: Node) -> bool:
        if not node.socket.exists():
            return False
        try:
            return bool(node.client.ping())
        except Exception:  # noqa: BLE001 - not up yet: any failure means the same
            node.close()
            return False

    def _form_swarm(self, timeout: float) -> None:
        manager = self.manager
        spec = {}
        if self.heartbeat_seconds:
            spec["dispatcher_heartbeat_period"] = int(self.heartbeat_seconds * 1e9)
        manager.client.swarm.init(advertise_addr=manager.address,
                                  listen_addr=f"{manager.address}:{SWARM_PORT}", **spec)
        manager.client.swarm.reload()
        token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.workers:
            node.client.swarm.join(remote_addrs=[f"{manager.address}:{SWARM_PORT}"], join_token=token,
                                   advertise_addr=node.address,
                                   listen_addr=f"{node.address}:{SWARM_PORT}")
        for node in self.nodes:
            node.node_id = node.client.info()["Swarm"]["NodeID"]
        _wait(lambda: self.ready_count() == len(self.nodes), "every node Ready", timeout)

    # --- using it ------------------------------------------------------------------------------

    def node_states(self) -> dict[str, str]:
        """{node id: state} as the manager sees it ("ready", "down", "unknown")."""
        return {n.id: n.attrs["Status"]["State"] for n in self.manager.client.nodes.list()}

    def ready_count(self) -> int:
        return sum(state == "ready" for state in self.node_states().values())

    def node_by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def load_image(self, source: docker.DockerClient, image: str) -> None:
        """Copy `image` from `source` (any engine API) into every node: save once, load per node."""
        with tempfile.TemporaryFile(dir=self.directory) as archive:
            for chunk in source.images.get(image).save(named=True):
                archive.write(chunk)
            for node in self.nodes:
                archive.seek(0)
                loaded = node.client.images.load(archive)
                if loaded and not node.client.images.list(name=image):
                    loaded[0].tag(image)  # an engine that saved it under another name

    def cut(self, node: Node) -> None:
        """Take the node off the network: its only link goes down (its daemon keeps running)."""
        _run("ip", "link", "set", node.veth_host, "down")

    def restore(self, node: Node) -> None:
        _run("ip", "link", "set", node.veth_host, "up")

    # --- tear down -----------------------------------------------------------------------------

    def teardown(self, keep_lock: bool = False) -> None:
        """Stop every daemon (by pid file), kill what they left, remove links, namespaces, mounts and
        directories. Safe to call several times, and on a half-built or crashed cluster; refuses
        (ClusterError) while another live run holds the tag."""
        self._lock(wait=0)
        try:
            self._remove_everything()
        finally:
            if not keep_lock:
                self._unlock()

    def _remove_everything(self) -> None:
        for node in self.nodes:
            node.close()
        for node in self.nodes:
            _signal_pid_file(node.pid_file, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for node in self.nodes:
            while _pid_alive(node.pid_file) and time.monotonic() < deadline:
                time.sleep(0.2)
            _signal_pid_file(node.pid_file, signal.SIGKILL)
        self._kill_leftovers()
        for node in self.nodes:
            _run("ip", "link", "del", node.veth_host, check=False)
            _run("ip", "netns", "del", node.name, check=False)
            _remove_cgroups(node.name)
        _run("ip", "link", "del", self.bridge, check=False)
        _unmount_under(self.directory)
        if self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """containerd, shims and container processes of these nodes: found by this cluster's own
        directory on their command line, or in the nodes' cgroups; killed by pid."""
        mine = str(self.directory) + "/"
        pids: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ")
                if mine in cmdline.decode(errors="replace"):
                    pids.add(int(proc.name))
        for node in self.nodes:
            for procs in Path("/sys/fs/cgroup/pids", node.name).glob("**/cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        pids.discard(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)

    def node_processes(self) -> list[int]:
        """Pids of dockerd processes of this cluster that still run (empty after teardown)."""
        return [pid for pid in (_read_pid(n.pid_file) for n in self.nodes) if pid and _alive(pid)]

    def leftovers(self) -> list[str]:
        """What of this cluster still exists: namespaces, links, daemons, mounts (empty after teardown)."""
        found = []
        namespaces = _run("ip", "netns", "list", check=False).stdout.split()
        found += [f"netns {n.name}" for n in self.nodes if n.name in namespaces]
        links = _run("ip", "-o", "link", "show", check=False).stdout
        found += [f"link {name}" for name in [self.bridge] + [n.veth_host for n in self.nodes]
                  if f" {name}:" in links or f" {name}@" in links]
        found += [f"dockerd pid {pid}" for pid in self.node_processes()]
        found += [f"mount {m}" for m in _mounts_under(self.directory)]
        return found


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return False


def _pid_alive(pid_file: Path) -> bool:
    pid = _read_pid(pid_file)
    return bool(pid) and _alive(pid)


def _signal_pid_file(pid_file: Path, sig: int) -> None:
    pid = _read_pid(pid_file)
    if pid and _alive(pid) and "dockerd" in Path(f"/proc/{pid}/comm").read_text():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == str(directory):
                found.append(point)
    return found


def _unmount_under(directory: Path) -> None:
    for point in sorted(_mounts_under(directory), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


def _remove_cgroups(parent: str) -> None:
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / parent
        if not top.is_dir():
            continue
        for group in sorted(top.glob("**/"), key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                group.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "down":
        cluster = SwarmCluster(tag=argv[2])
        cluster.teardown()
        left = cluster.leftovers()
        print("\n".join(left) if left else f"cluster {argv[2]}: nothing left")
        return 1 if left else 0
    print("usage: python -m tests.support.swarm_cluster down TAG")
    return 2


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv))
