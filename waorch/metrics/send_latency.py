"""The accepted→sent latency histogram, written on the ACK path (read by the collector)."""

from __future__ import annotations

import redis

from waorch.core import histograms, keys

# Accepted→sent includes pacing (a few sends per minute per session), so buckets reach a day.
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                   21600.0, 86400.0)


def observe_send_latency(r: redis.Redis, msg_id: str, sent_at: float) -> float | None:
    """Record accepted→sent seconds of a message that was just ACKed; returns the value."""
    created = r.hget(keys.message(msg_id), "created_at")
    if not created:
        return None
    seconds = max(0.0, sent_at - float(created))
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(keys.METRICS_SEND_LATENCY, histograms.bucket_field(seconds, LATENCY_BUCKETS), 1)
    pipe.hincrbyfloat(keys.METRICS_SEND_LATENCY, "sum", seconds)
    pipe.hincrby(keys.METRICS_SEND_LATENCY, "count", 1)
    pipe.execute()
    return seconds
