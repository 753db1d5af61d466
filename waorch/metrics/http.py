"""Gateway request counts and durations, for GET /metrics.

Each gateway process tallies its requests in memory and adds the tally to Redis every
WAORCH_METRICS_FLUSH seconds in one MULTI, instead of one write per request on the hot path; the
scrape then reads the fleet-wide sums (waorch.metrics.collector). A process that dies loses at most its last
few seconds. With WAORCH_METRICS_FLUSH=0 every request writes at once (the tests do that, so that
no count of one test's requests lands in the next test's Redis later).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter, defaultdict

import redis

from waorch.core import histograms, keys, settings
from waorch.core.redis_client import get_redis

log = logging.getLogger(__name__)

# Seconds. Claim long-polls answer after up to WAORCH_CLAIM_WAIT (25 s): they land in the top buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestTally:
    """Counts of one process, flushed to Redis by a daemon thread (a greenlet under gevent)."""

    def __init__(self, flush_every: float | None = None) -> None:
        self._flush_every = flush_every  # None: WAORCH_METRICS_FLUSH
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()  # "<endpoint>|<method>|<status>"
        self._buckets: Counter[str] = Counter()  # "<endpoint>|b:<le>"
        self._sums: defaultdict[str, float] = defaultdict(float)  # endpoint -> seconds
        self._flusher_pid: int | None = None

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        field = histograms.bucket_field(seconds, BUCKETS, f"{endpoint}|")
        with self._lock:
            self._requests[f"{endpoint}|{method}|{status}"] += 1
            self._buckets[field] += 1
            self._sums[endpoint] += seconds
        if self.flush_every <= 0:
            self._flush_quietly()
        elif self._flusher_pid != os.getpid():  # first request of this process (or after a fork)
            self._start_flusher()

    @property
    def flush_every(self) -> float:
        return settings.get().metrics_flush if self._flush_every is None else self._flush_every

    def flush(self, r: redis.Redis) -> int:
        """Add what was tallied since the last flush to Redis; returns the requests written."""
        with self._lock:
            requests, buckets, sums = self._requests, self._buckets, self._sums
            self._requests, self._buckets, self._sums = Counter(), Counter(), defaultdict(float)
        if not requests:
            return 0
        pipe = r.pipeline(transaction=True)
        for field, n in requests.items():
            pipe.hincrby(keys.METRICS_HTTP_REQUESTS, field, n)
        for field, n in buckets.items():
            pipe.hincrby(keys.METRICS_HTTP_DURATION, field, n)
        for endpoint, seconds in sums.items():
            pipe.hincrbyfloat(keys.METRICS_HTTP_DURATION, f"{endpoint}|sum", seconds)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            with self._lock:  # all or nothing (MULTI): keep it for the next flush
                self._requests.update(requests)
                self._buckets.update(buckets)
                for endpoint, seconds in sums.items():
                    self._sums[endpoint] += seconds
            log.warning("http metrics not written: %s", exc.__class__.__name__)
            return 0
        return sum(requests.values())

    def discard(self) -> None:
        """Forget what was not written yet (tests: counts meant for another Redis)."""
        with self._lock:
            self._requests, self._buckets, self._sums = Counter(), Counter(), defaultdict(float)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="waorch-http-metrics", daemon=True).start()
        atexit.register(self._flush_quietly)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(max(0.1, self.flush_every))
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush(get_redis())
        except Exception:  # noqa: BLE001  (metrics must never take the gateway down)
            log.exception("http metrics flush failed")


TALLY = RequestTally()
