"""Accepted POST /api/send per second and messages/s through /api/send/batch, against a bare Flask
endpoint served the same way (gunicorn + gevent) in the same run. Also: /api/send throughput while
hundreds of session workers hold claim long-polls open, for both WAORCH_CLAIM_WAKEUP modes (`poll`:
the old 0.5 s re-checks, `notify`: pub/sub wake-ups), with the idle cost of the parked polls
(gateway CPU, Redis CPU, claim scripts/s) and the wake latency of a parked claim.

Run: .venv/bin/python bench/bench_api.py [--seconds 5] [--rounds 3] [--idle-polls 300] [--probes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import run_load  # noqa: E402
from waorch.core.redis_client import get_redis  # noqa: E402
from waorch.launcher.redis_server import free_port, start_local_redis  # noqa: E402
from waorch.sending import accept
from waorch.tenants import apikeys  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def serve(target: str, port: int, env: dict, workers: int, log: Path) -> subprocess.Popen:
    cmd = [PY, "-m", "gunicorn", "--worker-class", "gevent", "--workers", str(workers),
           "--worker-connections", "2000", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
           "--no-control-socket", target]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{target} did not start: {log.read_text()[-2000:]}")


def make_bench_session(r, sid: str, phone: str) -> str:
    """A registered session (no worker); returns its worker secret."""
    from waorch.core import keys
    from waorch.core.signing import derive_secret

    r.hset(keys.session(sid), mapping={"id": sid, "tenant": "bench", "phone": phone,
                                       "status": "connected", "salt": "s"})
    r.sadd(keys.SESSIONS_ALL, sid)
    return derive_secret(os.environ["WAORCH_SECRET_KEY"], f"session:{sid}:s")


def claim_once(url: str, sid: str, secret: str, wait: float, http=requests) -> requests.Response:
    import secrets

    from waorch.core import signing

    body = json.dumps({"session_id": sid, "nonce": secrets.token_hex(8), "wait": wait}).encode()
    headers = {"Content-Type": "application/json", **signing.sign_headers(secret, body)}
    return http.post(f"{url}/api/worker/sessions/{sid}/outbox/claim", data=body, headers=headers,
                     timeout=wait + 15)


def hold_long_polls(url: str, n: int, stop: threading.Event, r, prefix: str) -> list[threading.Thread]:
    """n idle connections parked on the claim endpoint (signed, for real sessions with no work)."""
    threads = []
    for i in range(n):
        sid = f"{prefix}{i}"
        secret = make_bench_session(r, sid, f"1415555{i:04d}")

        def poll(sid=sid, secret=secret):
            s = requests.Session()
            while not stop.is_set():
                try:
                    claim_once(url, sid, secret, 25, http=s)
                except requests.RequestException:
                    time.sleep(0.5)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        threads.append(t)
    return threads


def wake_latencies(url: str, r, prefix: str, n: int) -> list[float]:
    """Seconds from a message getting its send slot to the parked claim of its session returning it."""
    from waorch.policy.pacing import Pace
    from waorch.sending import outbox

    out = []
    for i in range(n):
        sid, phone = f"{prefix}{i}", f"1416555{i:04d}"
        secret = make_bench_session(r, sid, phone)
        pool = ThreadPoolExecutor(1)
        parked = pool.submit(claim_once, url, sid, secret, 20)
        # let it park (the gateway is another process); not a multiple of the 0.5 s poll period
        time.sleep(random.uniform(1.0, 1.5))
        msg_id = accept.new_message_id()
        to = f"1417{random.randrange(10**7):07d}"  # own recipient: no per-recipient hold-back
        accept.store(r, "bench", [{"id": msg_id, "to": to, "text": "x"}], {"ids": [msg_id]})
        outbox.route(r, msg_id, sid, phone)
        t0 = time.monotonic()
        outbox.reserve_slots(r, sid, phone, Pace(per_minute=60, jitter=0))
        res = parked.result()
        if res.status_code == 200:
            out.append(time.monotonic() - t0)
        pool.shutdown()
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its children (a gunicorn master and its workers)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def redis_cost(r) -> tuple[float, int]:
    """Redis CPU seconds so far and script calls (EVALSHA) served."""
    cpu = r.info("cpu")
    stats = r.info("commandstats")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], stats.get("cmdstat_evalsha", {}).get("calls", 0)


def idle_cost(r, gateway: subprocess.Popen, seconds: float) -> dict[str, float]:
    """Per second of nothing but parked long-polls: gateway CPU, Redis CPU, claim scripts."""
    g0, (c0, e0) = cpu_seconds(gateway.pid), redis_cost(r)
    time.sleep(seconds)
    g1, (c1, e1) = cpu_seconds(gateway.pid), redis_cost(r)
    return {"gateway_cpu_pct": round(100 * (g1 - g0) / seconds, 1),
            "redis_cpu_pct": round(100 * (c1 - c0) / seconds, 1),
            "scripts_per_s": round((e1 - e0) / seconds, 1)}


def stop_gateway(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # parked long-polls outlive the graceful timeout
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-polls", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--probes", type=int, default=10, help="wake-latency probes per claim mode")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="waorch-bench-")
    redis = start_local_redis(Path(tmp) / "redis", appendonly=True)
    env = {**os.environ, "REDIS_URL": redis.url, "WAORCH_RATE_LIMIT": "1000000",
           "WAORCH_RATE_BURST": "1000000", "WAORCH_SECRET_KEY": "bench-secret", "PYTHONPATH": str(ROOT),
           "WAORCH_LOG_LEVEL": "WARNING"}
    os.environ.update({"REDIS_URL": redis.url, "WAORCH_SECRET_KEY": "bench-secret"})
    r = get_redis(redis.url)
    key = apikeys.create_key(r, "bench", "send")
    modes = ("poll", "notify")  # WAORCH_CLAIM_WAKEUP: the old 0.5 s polling and the wake-ups
    ports = {m: free_port() for m in modes}
    bare_port = free_port()
    gateways: dict[str, subprocess.Popen] = {}
    bare = None
    try:
        for m in modes:
            gateways[m] = serve("app:create_app()", ports[m], {**env, "WAORCH_CLAIM_WAKEUP": m},
                                args.workers, Path(tmp) / f"gateway-{m}.log")
        bare = serve("bench.bare_app:app", bare_port, env, args.workers, Path(tmp) / "bare.log")
    except BaseException:
        for proc in [*gateways.values(), bare]:
            if proc is not None:
                stop_gateway(proc)
        redis.stop()  # never leave the benchmark's Redis running behind a failed start
        raise
    gw = {m: f"http://127.0.0.1:{ports[m]}" for m in modes}
    bare_url = f"http://127.0.0.1:{bare_port}"
    single = {"to": "+14155550123", "text": "benchmark message"}
    batch = {"messages": [single] * args.batch_size}
    hdr = {"X-API-Key": key}
    names = ("send", "bare_send", "batch_msgs", "bare_batch_msgs", "send_poll_gateway",
             *(f"send_polls_{m}" for m in modes))
    rows: dict[str, list[float]] = {k: [] for k in names}
    p50: dict[str, list[float]] = {k: [] for k in rows}
    idle: dict[str, dict[str, float]] = {}
    latency: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for name, url, path, payload, mult in (
                ("send", gw["notify"], "/api/send", single, 1),
                ("bare_send", bare_url, "/api/send", single, 1),
                ("send_poll_gateway", gw["poll"], "/api/send", single, 1),
                ("batch_msgs", gw["notify"], "/api/send/batch", batch, args.batch_size),
                ("bare_batch_msgs", bare_url, "/api/send/batch", batch, args.batch_size),
            ):
                res = run_load(url, path, payload, hdr, seconds=args.seconds)
                rows[name].append(res["ok_per_s"] * mult)
                print(f"{name}: {res['ok_per_s'] * mult:.0f}/s errors={res['errors']}", file=sys.stderr)
                p50[name].append(res["p50_ms"] or 0)
                r.delete("dispatch")  # keep the broker list from growing across rounds
        stop_gateway(bare)
        bare = None
        # one claim mode at a time, so the parked polls of one do not load the other's figures
        for m in modes:
            stop = threading.Event()
            hold_long_polls(gw[m], args.idle_polls, stop, r, prefix=f"bench-{m}-")
            time.sleep(3)  # let the long-polls park
            idle[m] = idle_cost(r, gateways[m], args.seconds)
            print(f"idle {m}: {idle[m]}", file=sys.stderr)
            for _ in range(args.rounds):
                res = run_load(gw[m], "/api/send", single, hdr, seconds=args.seconds)
                rows[f"send_polls_{m}"].append(res["ok_per_s"])
                p50[f"send_polls_{m}"].append(res["p50_ms"] or 0)
                print(f"send_polls_{m}: {res['ok_per_s']:.0f}/s", file=sys.stderr)
                r.delete("dispatch")
            latency[m] = wake_latencies(gw[m], r, f"probe-{m}-", args.probes)
            stop.set()
            stop_gateway(gateways.pop(m))  # ends the parked polls with it
    finally:
        for proc in [*gateways.values(), bare]:
            if proc is not None:
                stop_gateway(proc)
        redis.stop()
    med = {k: statistics.median(v) for k, v in rows.items()}
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "rounds": args.rounds, "seconds": args.seconds, "gunicorn_workers": args.workers,
        "median_per_s": {k: round(v, 1) for k, v in med.items()},
        "median_p50_ms": {k: round(statistics.median(v), 2) for k, v in p50.items()},
        "ratio_send_vs_bare": round(med["send"] / med["bare_send"], 3),
        "ratio_batch_vs_bare": round(med["batch_msgs"] / med["bare_batch_msgs"], 3),
        "idle_long_polls": args.idle_polls,
        "ratio_send_with_polls_vs_without": {
            "poll": round(med["send_polls_poll"] / med["send_poll_gateway"], 3),
            "notify": round(med["send_polls_notify"] / med["send"], 3)},
        "idle_cost_with_polls_parked": idle,
        "wake_latency_ms": {m: {"median": round(1000 * statistics.median(v), 1) if v else None,
                                "max": round(1000 * max(v), 1) if v else None, "n": len(v)}
                            for m, v in latency.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
