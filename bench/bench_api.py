"""Accepted POST /api/send per second and messages/s through /api/send/batch, against a bare Flask
endpoint served the same way (gunicorn + gevent) in the same run. Also: /api/send throughput while
hundreds of session workers hold claim long-polls open.

Run: .venv/bin/python bench/bench_api.py [--seconds 5] [--rounds 3] [--idle-polls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import run_load  # noqa: E402
from waorch import apikeys  # noqa: E402
from waorch.redis_client import get_redis  # noqa: E402
from waorch.redis_server import free_port, start_local_redis  # noqa: E402

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


def hold_long_polls(url: str, n: int, stop: threading.Event, r) -> list[threading.Thread]:
    """n idle connections parked on the claim endpoint (signed, for real sessions with no work)."""
    import secrets

    from waorch import keys, signing
    from waorch.signing import derive_secret

    master = os.environ["WAORCH_SECRET_KEY"]
    threads = []
    for i in range(n):
        sid = f"bench{i}"
        salt = "s"
        r.hset(keys.session(sid), mapping={"id": sid, "tenant": "bench", "phone": f"1415555{i:04d}",
                                           "status": "connected", "salt": salt})
        r.sadd(keys.SESSIONS_ALL, sid)
        secret = derive_secret(master, f"session:{sid}:{salt}")

        def poll(sid=sid, secret=secret):
            s = requests.Session()
            while not stop.is_set():
                body = json.dumps({"session_id": sid, "nonce": secrets.token_hex(8), "wait": 25}).encode()
                headers = {"Content-Type": "application/json", **signing.sign_headers(secret, body)}
                try:
                    s.post(f"{url}/api/worker/sessions/{sid}/outbox/claim", data=body, headers=headers,
                           timeout=40)
                except requests.RequestException:
                    time.sleep(0.5)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        threads.append(t)
    return threads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-polls", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="waorch-bench-")
    redis = start_local_redis(Path(tmp) / "redis", appendonly=True)
    env = {**os.environ, "REDIS_URL": redis.url, "WAORCH_RATE_LIMIT": "1000000",
           "WAORCH_RATE_BURST": "1000000", "WAORCH_SECRET_KEY": "bench-secret", "PYTHONPATH": str(ROOT),
           "WAORCH_LOG_LEVEL": "WARNING"}
    os.environ.update({"REDIS_URL": redis.url, "WAORCH_SECRET_KEY": "bench-secret"})
    r = get_redis(redis.url)
    key = apikeys.create_key(r, "bench", "send")
    gw_port, bare_port = free_port(), free_port()
    try:
        gateway = serve("app:create_app()", gw_port, env, args.workers, Path(tmp) / "gateway.log")
        bare = serve("bench.bare_app:app", bare_port, env, args.workers, Path(tmp) / "bare.log")
    except BaseException:
        redis.stop()  # never leave the benchmark's Redis running behind a failed start
        raise
    single = {"to": "+14155550123", "text": "benchmark message"}
    batch = {"messages": [single] * args.batch_size}
    hdr = {"X-API-Key": key}
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("send", "bare_send", "batch_msgs", "bare_batch_msgs", "send_polls")}
    p50: dict[str, list[float]] = {k: [] for k in rows}
    try:
        for _ in range(args.rounds):
            for name, url, path, payload, mult in (
                ("send", f"http://127.0.0.1:{gw_port}", "/api/send", single, 1),
                ("bare_send", f"http://127.0.0.1:{bare_port}", "/api/send", single, 1),
                ("batch_msgs", f"http://127.0.0.1:{gw_port}", "/api/send/batch", batch, args.batch_size),
                ("bare_batch_msgs", f"http://127.0.0.1:{bare_port}", "/api/send/batch", batch,
                 args.batch_size),
            ):
                res = run_load(url, path, payload, hdr, seconds=args.seconds)
                rows[name].append(res["ok_per_s"] * mult)
                print(f"{name}: {res['ok_per_s'] * mult:.0f}/s errors={res['errors']}", file=sys.stderr)
                p50[name].append(res["p50_ms"] or 0)
                r.delete("dispatch")  # keep the broker list from growing across rounds
        stop = threading.Event()
        hold_long_polls(f"http://127.0.0.1:{gw_port}", args.idle_polls, stop, r)
        time.sleep(3)  # let the long-polls park
        for _ in range(args.rounds):
            res = run_load(f"http://127.0.0.1:{gw_port}", "/api/send", single, hdr, seconds=args.seconds)
            rows["send_polls"].append(res["ok_per_s"])
            p50["send_polls"].append(res["p50_ms"] or 0)
            r.delete("dispatch")
        stop.set()
    finally:
        for proc in (gateway, bare):
            proc.terminate()
        for proc in (gateway, bare):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # parked long-polls outlive the graceful timeout
                proc.kill()
                proc.wait()
        redis.stop()
    med = {k: statistics.median(v) for k, v in rows.items()}
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "rounds": args.rounds, "seconds": args.seconds, "gunicorn_workers": args.workers,
        "median_per_s": {k: round(v, 1) for k, v in med.items()},
        "median_p50_ms": {k: round(statistics.median(v), 2) for k, v in p50.items()},
        "ratio_send_vs_bare": round(med["send"] / med["bare_send"], 3),
        "ratio_batch_vs_bare": round(med["batch_msgs"] / med["bare_batch_msgs"], 3),
        "ratio_send_with_polls_vs_without": round(med["send_polls"] / med["send"], 3),
        "idle_long_polls": args.idle_polls,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
