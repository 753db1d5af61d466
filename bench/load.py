"""A small closed-loop HTTP load generator (keep-alive connections, several processes)."""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import statistics
import time
from urllib.parse import urlsplit


def _client(url: str, path: str, body: bytes, headers: dict, seconds: float, conns: int,
            out: mp.Queue) -> None:
    import threading

    parts = urlsplit(url)
    results = []
    lock = threading.Lock()

    def loop():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        ok = bad = 0
        latencies = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            latencies.append(time.perf_counter() - t0)
            if resp.status == 202:
                ok += 1
            else:
                bad += 1
        with lock:
            results.append((ok, bad, latencies))

    threads = [threading.Thread(target=loop) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    lat = [x for r in results for x in r[2]]
    out.put((ok, bad, lat))


def run_load(url: str, path: str, payload: dict, headers: dict, seconds: float = 5.0,
             processes: int = 2, conns: int = 8) -> dict:
    """Requests/s answered 202, errors, and latency percentiles of a closed-loop load."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **headers}
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(url, path, body, headers, seconds, conns, out))
             for _ in range(processes)]
    start = time.monotonic()
    for p in procs:
        p.start()
    parts = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    ok = sum(p[0] for p in parts)
    bad = sum(p[1] for p in parts)
    lat = sorted(x for p in parts for x in p[2])
    return {
        "ok_per_s": ok / seconds, "errors": bad, "elapsed": elapsed,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1] if lat else None,
    }
