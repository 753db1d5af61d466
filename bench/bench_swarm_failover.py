"""Swarm's own failover on this machine: a 3-node Swarm in network namespaces
(tests/support/swarm_cluster.py), services with replicas 1 on the two workers, one worker's link
cut per round. Measures, from the cut: the manager marking the node Down, and every task of that
node running on the other worker. The services run `sleep` from the empty test image (host /usr
bind-mounted): this is Swarm's part of a failover only, not a session reconnecting.

    .venv/bin/python -m bench.bench_swarm_failover [--rounds 3] [--services 4] [--heartbeat 5] [--write]

Needs root, dockerd (scripts/setup-dockerd.sh) and the test image in podman (scripts/setup-engine.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import docker
from docker.types import EndpointSpec, RestartPolicy, ServiceMode

from bench.benchmarks_md import write_section
from tests.support.swarm_cluster import SwarmCluster

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Swarm failover (infrastructure)"
IMAGE = os.environ.get("WAORCH_TEST_IMAGE", "localhost/waorch-test:1")


def _placement(client: docker.DockerClient, services: list) -> dict[str, str]:
    """{service id: node id} of running tasks."""
    where = {}
    for task in client.api.tasks(filters={"desired-state": "running"}):
        if task["Status"]["State"] == "running" and task["ServiceID"] in {s.id for s in services}:
            where[task["ServiceID"]] = task["NodeID"]
    return where


def _until(predicate, timeout: float = 180.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError("no failover within the deadline")


def run(rounds: int, count: int, heartbeat: float | None) -> list[tuple[float, float]]:
    source = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///run/waorch-podman.sock")
    cluster = SwarmCluster(tag="bf", subnet="10.213.50.0/24", heartbeat_seconds=heartbeat)
    figures = []
    try:
        cluster.up()
        cluster.load_image(source, IMAGE)
        client = cluster.manager.client
        services = [client.services.create(
            IMAGE, command=["/usr/bin/sleep", "infinity"], name=f"bench_failover_{i}",
            mode=ServiceMode("replicated", replicas=1), networks=["host"],
            endpoint_spec=EndpointSpec(mode="dnsrr"), constraints=["node.role==worker"],
            mounts=["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro"],
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            stop_grace_period=1_000_000_000) for i in range(count)]
        _until(lambda: len(_placement(client, services)) == count)
        for number in range(rounds):
            where = _placement(client, services)
            victim = cluster.node_by_id(max(set(where.values()), key=list(where.values()).count))
            moving = [sid for sid, node in where.items() if node == victim.node_id]
            cluster.cut(victim)
            cut_at = time.monotonic()
            down_at = _until(lambda v=victim: cluster.node_states()[v.node_id] == "down")

            def moved(v=victim, ids=moving) -> bool:
                now = _placement(client, services)
                return all(now.get(sid) not in (None, v.node_id) for sid in ids)

            moved_at = _until(moved)
            figures.append((down_at - cut_at, moved_at - cut_at))
            print(f"round {number + 1}: {victim.name} with {len(moving)} task(s): down after "
                  f"{down_at - cut_at:.1f} s, all running elsewhere after {moved_at - cut_at:.1f} s")
            cluster.restore(victim)
            _until(lambda v=victim: cluster.node_states()[v.node_id] == "ready")
        return figures
    finally:
        cluster.teardown()
        source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--heartbeat", type=float, default=None,
                        help="Swarm dispatcher heartbeat period in s (Swarm's default: 5)")
    parser.add_argument("--write", action="store_true", help=f"rewrite '{SECTION}' of BENCHMARKS.md")
    args = parser.parse_args()
    figures = run(args.rounds, args.services, args.heartbeat)
    down = [d for d, _ in figures]
    moved = [m for _, m in figures]
    beat = f"{args.heartbeat:g} s" if args.heartbeat else "default (5 s)"
    text = (f"{SECTION}\n\n`python -m bench.bench_swarm_failover --rounds {args.rounds} --services "
            f"{args.services}`: 3 dockerd nodes in network namespaces, heartbeat {beat}, one worker's "
            f"link cut per round.\n\n| from the cut | median | max |\n|---|---|---|\n"
            f"| node marked Down | {statistics.median(down):.1f} s | {max(down):.1f} s |\n"
            f"| its tasks running elsewhere | {statistics.median(moved):.1f} s | {max(moved):.1f} s |\n")
    print(text)
    if args.write:
        write_section(SECTION, text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
