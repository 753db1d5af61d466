"""Redis Sentinel failover: time until writes work again, and acknowledged writes lost.

Topology from tests/support/sentinel.py (one primary, one replica, three sentinels on 127.0.0.1,
down-after-milliseconds 1000, failover-timeout 5000). Clients are built from the Sentinel
REDIS_URL by waorch.core.redis_urls.redis_client_for (redis-py's own retry included).

1. recovery: kill -9 the primary, then write in a loop; per run the times from the kill to the
   sentinels' +odown and +switch-master (from their logs) and to the first successful write.
2. loss: writer threads RPUSH numbered values in a steady stream; a value counts as acknowledged
   when the command returned (with --wait: when the `WAIT 1 <ms>` sent after it on the same
   connection, in one pipeline, reported the replica). After the failover the new primary's lists
   are compared with what was acknowledged. Scenarios: a plain kill -9; and a lagging replica
   (SIGSTOP for --lag seconds just before the kill, SIGCONT after it: the replication stream
   backs up into the primary's output buffer, as on a slow link).
3. min-replicas-to-write 1 on both nodes: after the failover the new primary has no replica, so
   it refuses writes (NOREPLICAS) until the old primary is back as its replica.

    .venv/bin/python -m bench.bench_sentinel_failover [--runs 5] [--writers 4] [--lag 0.8]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import redis

from tests.support.sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelSetup, start_sentinel_setup
from waorch.core.redis_urls import redis_client_for


def sentinel_event_time(setup: SentinelSetup, event: str) -> float | None:
    """Earliest wall-clock time any sentinel logged `event` (e.g. +switch-master)."""
    times = []
    for sentinel in setup.sentinels:
        for line in sentinel.log_tail(100_000).splitlines():
            if f" {event} " in line:
                stamp = " ".join(line.split()[1:5])  # "03 Dec 2026 14:53:36.264"
                times.append(datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").timestamp())
    return min(times) if times else None


def recovery_run() -> dict[str, float]:
    with start_sentinel_setup() as setup:
        client = redis_client_for(setup.url())
        client.set("warm", "1")  # a pooled connection to the primary, as a running process has
        killed_wall = time.time()
        killed = setup.kill_primary()
        while True:
            try:
                client.incr("after")
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                time.sleep(0.01)
        first_write = time.monotonic() - killed
        client.close()
        setup.wait_for_new_primary(killed)
        odown = sentinel_event_time(setup, "+odown")
        switched = sentinel_event_time(setup, "+switch-master")
    return {"odown": odown - killed_wall, "switch": switched - killed_wall, "write": first_write}


@dataclass
class Stream:
    key: str
    acked: list[int] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)
    errors: int = 0


def write_stream(client: redis.Redis, stream: Stream, stop: threading.Event, wait_ms: int | None,
                 padding: str) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        value = f"{number}:{padding}"
        try:
            if wait_ms is None:
                client.rpush(stream.key, value)
                acknowledged = True
            else:
                # WAIT covers the writes of its own connection: same pipeline, same connection
                pipe = client.pipeline(transaction=False)
                pipe.rpush(stream.key, value)
                pipe.wait(1, wait_ms)
                acknowledged = pipe.execute()[1] >= 1
        except redis.RedisError:
            stream.errors += 1
            acknowledged = False
            time.sleep(0.01)
        (stream.acked if acknowledged else stream.unacked).append(number)


def loss_run(writers: int, wait_ms: int | None, lag: float, value_size: int) -> dict[str, int]:
    with start_sentinel_setup() as setup:
        client = redis_client_for(setup.url(), max_connections=writers + 4)
        streams = [Stream(f"stream:{n}") for n in range(writers)]
        stop = threading.Event()
        padding = "x" * value_size
        threads = [threading.Thread(target=write_stream, args=(client, s, stop, wait_ms, padding))
                   for s in streams]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # a steady stream before the kill
        if lag:
            setup.replica.process.send_signal(signal.SIGSTOP)
            time.sleep(lag)
        killed = setup.kill_primary()
        if lag:
            setup.replica.process.send_signal(signal.SIGCONT)
        setup.wait_for_new_primary(killed)
        time.sleep(1.5)  # writes on the new primary too
        stop.set()
        for thread in threads:
            thread.join(30)
        reader = setup.primary.client(timeout=30)
        lost = duplicated = applied_unacked = acked = 0
        for stream in streams:
            present = [int(v.split(":", 1)[0]) for v in reader.lrange(stream.key, 0, -1)]
            present_set = set(present)
            acked += len(stream.acked)
            lost += len(set(stream.acked) - present_set)
            duplicated += len(present) - len(present_set)
            applied_unacked += len(present_set & set(stream.unacked))
        reader.close()
        client.close()
    return {"acked": acked, "lost": lost, "duplicated": duplicated, "applied_unacked": applied_unacked,
            "errors": sum(s.errors for s in streams)}


def min_replicas_run(refused_for: float) -> dict[str, float | int]:
    config = {"min-replicas-to-write": "1", "min-replicas-max-lag": "10"}
    with start_sentinel_setup(data_config=config) as setup:
        client = redis_client_for(setup.url())
        client.set("before", "1")
        killed = setup.kill_primary()
        setup.wait_for_new_primary(killed)
        refusals = 0
        until = time.monotonic() + refused_for
        written_alone = False
        while time.monotonic() < until:
            try:
                client.set("alone", "1")
                written_alone = True
                break
            except redis.ResponseError as exc:  # NOREPLICAS
                refusals += "NOREPLICAS" in str(exc)
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(0.1)
        back = time.monotonic()
        setup.restart_old_primary()
        while True:
            with contextlib.suppress(redis.RedisError):
                client.set("with-replica", "1")
                break
            time.sleep(0.05)
        client.close()
    return {"refusals": refusals, "written_alone": int(written_alone),
            "seconds_to_write_after_restart": round(time.monotonic() - back, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--wait-ms", type=int, default=100, help="WAIT timeout for the --wait runs")
    parser.add_argument("--lag", type=float, default=0.8, help="seconds the replica stops before the kill")
    parser.add_argument("--value-size", type=int, default=8192, help="bytes per value in the lag scenario")
    parser.add_argument("--skip", default="", help="comma list of recovery,loss,min-replicas")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"down-after-milliseconds {DOWN_AFTER_MS}, failover-timeout {FAILOVER_TIMEOUT_MS}, "
          f"redis-py {redis.__version__}")

    if "recovery" not in skip:
        runs = [recovery_run() for _ in range(args.runs)]
        print(f"\nrecovery after kill -9, {args.runs} runs (seconds):")
        for name, label in (("odown", "+odown (quorum agrees it is down)"),
                            ("switch", "+switch-master (replica promoted)"),
                            ("write", "first successful write via the Sentinel URL")):
            values = [r[name] for r in runs]
            print(f"  {label:48} median {statistics.median(values):.2f}  "
                  f"min {min(values):.2f}  max {max(values):.2f}")

    if "loss" not in skip:
        print(f"\nacknowledged writes lost, {args.writers} writers, {args.runs} runs each (totals):")
        print("  scenario                    ack'd     lost  dup'd  applied-unack'd  errors")
        for lag, size in ((0.0, 16), (args.lag, args.value_size)):
            for wait_ms in (None, args.wait_ms):
                rows = [loss_run(args.writers, wait_ms, lag, size) for _ in range(args.runs)]
                total = {k: sum(r[k] for r in rows) for k in rows[0]}
                name = (f"{'lagging replica' if lag else 'kill -9'}"
                        f"{f' + WAIT 1 {wait_ms}' if wait_ms else ''}")
                print(f"  {name:26} {total['acked']:>7} {total['lost']:>8} {total['duplicated']:>6}"
                      f" {total['applied_unacked']:>16} {total['errors']:>7}   per run lost: "
                      f"{[r['lost'] for r in rows]}")

    if "min-replicas" not in skip:
        result = min_replicas_run(refused_for=10.0)
        print("\nmin-replicas-to-write 1 (1 primary + 1 replica): after the failover the new primary "
              f"refused {result['refusals']} writes in 10 s (written without a replica: "
              f"{bool(result['written_alone'])}); after restarting the old primary, writes worked again "
              f"within {result['seconds_to_write_after_restart']} s")


if __name__ == "__main__":
    main()
