"""Prometheus metrics read from Redis at scrape time, so every number is fleet-wide.

This module only reads. No counter lives in a process: message states are counted by
`lib/message.lua`'s transition, send latency is a histogram kept in a Redis HASH (written at ACK by
`waorch.metrics.send_latency`), Celery task outcomes by `waorch.metrics.celery_tasks`, gateway
requests by `waorch.metrics.http`. A scrape is a few pipelined reads over the index sets (no KEYS, no SCAN of
messages), whatever the number of gateway or Celery processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from waorch.alerts.events import ALERTS_ACTIVE
from waorch.core import histograms, keys, settings
from waorch.messages.records import STATES as MESSAGE_STATES
from waorch.metrics.celery_tasks import BUCKETS as TASK_BUCKETS
from waorch.metrics.http import BUCKETS as HTTP_BUCKETS
from waorch.metrics.send_latency import LATENCY_BUCKETS
from waorch.proxies.pool import proxy_fails_key, proxy_id, proxy_sessions_key
from waorch.sessions.registry import STATUSES as SESSION_STATUSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CELERY_QUEUES = ("dispatch", "orchestrator", "events", "maintenance")  # celeryconfig.task_queues
# kombu's Redis transport keeps one list per priority step: "<queue>", "<queue>\x06\x163", ...
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_KOMBU_UNACKED = "unacked"  # kombu's HASH of delivered, not yet acknowledged task messages
PROXY_STATUSES = ("OK", "BAD", "UNKNOWN")


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class RedisCollector(Collector):
    """Reads waorch's state from Redis on every collect(); Redis errors propagate to the caller."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def collect(self) -> Iterator:
        r = self.r
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(keys.METRICS_MESSAGE_STATES)
        pipe.hgetall(keys.METRICS_MESSAGE_ENTERED)
        pipe.hgetall(keys.METRICS_SEND_LATENCY)
        pipe.hgetall(keys.METRICS_CELERY_TASKS)
        pipe.hgetall(keys.METRICS_CELERY_LAST)
        pipe.hgetall(keys.METRICS_CELERY_DURATION)
        pipe.hgetall(keys.METRICS_HTTP_REQUESTS)
        pipe.hgetall(keys.METRICS_HTTP_DURATION)
        pipe.zcard(keys.MESSAGES_UNROUTED)
        pipe.smembers(keys.SESSIONS_ALL)
        pipe.scard(keys.SESSIONS_ACTIVE)
        pipe.smembers(keys.PROXIES_ALL)
        pipe.scard(keys.PROXIES_AVAILABLE)
        pipe.hlen(ALERTS_ACTIVE)
        pipe.zcard(keys.DEAD_LETTERS_ALL)
        pipe.hlen(_KOMBU_UNACKED)
        for queue in CELERY_QUEUES:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        (states, entered, latency, tasks, last_runs, task_durations, http_requests, http_durations, unrouted,
         session_ids, active, proxy_urls, available, alerts, dead, unacked, *queue_lengths) = pipe.execute()
        yield from self._messages(states, entered, latency, unrouted)
        yield from self._sessions(sorted(session_ids), active)
        yield from self._proxies(sorted(proxy_urls), available)
        yield from self._celery(tasks, last_runs, queue_lengths, unacked)
        yield labelled_histogram("waorch_celery_task_duration_seconds", "Seconds one run of a task took.",
                                 "task", task_durations, TASK_BUCKETS)
        yield from self._http(http_requests, http_durations)
        yield GaugeMetricFamily("waorch_alerts_active", "Alerts raised and not resolved.", value=alerts)
        yield GaugeMetricFamily("waorch_client_webhook_dead_letters",
                                "Client webhook events that ran out of retries (kept for redelivery).",
                                value=dead)

    def _messages(self, states: dict, entered: dict, latency: dict, unrouted: int) -> Iterator:
        now = GaugeMetricFamily("waorch_messages", "Messages currently in each state.", labels=["state"])
        total = CounterMetricFamily("waorch_message_transitions", "Messages that entered each state.",
                                    labels=["state"])
        for state in MESSAGE_STATES:
            now.add_metric([state], max(0, _int(states.get(state))))
            total.add_metric([state], _int(entered.get(state)))
        yield now
        yield total
        yield GaugeMetricFamily("waorch_messages_unrouted",
                                "Accepted messages not yet routed to a session.", value=unrouted)
        yield HistogramMetricFamily(
            "waorch_send_latency_seconds", "Seconds from acceptance to the worker's send ACK.",
            buckets=histograms.cumulative(latency, LATENCY_BUCKETS), sum_value=float(latency.get("sum") or 0))

    def _sessions(self, session_ids: list[str], active: int) -> Iterator:
        pipe = self.r.pipeline(transaction=False)
        for sid in session_ids:
            pipe.hmget(keys.session(sid), "status", "tenant", "phone")
        records = [(sid, *fields) for sid, fields in zip(session_ids, pipe.execute(), strict=True)
                   if fields[0] is not None]
        pipe = self.r.pipeline(transaction=False)
        for sid, _, _, phone in records:
            pipe.llen(keys.session_queue(phone or ""))
            pipe.zcard(keys.session_outbox(sid))
            pipe.zcard(keys.session_leases(sid))
        depths = pipe.execute()
        by_status = dict.fromkeys(SESSION_STATUSES, 0)
        queue = GaugeMetricFamily(
            "waorch_session_queue_messages",
            "Messages of one session: waiting (FIFO, no send slot yet), scheduled (outbox), leased.",
            labels=["session", "tenant", "queue"])
        for index, (sid, status, tenant, _) in enumerate(records):
            by_status[status] = by_status.get(status, 0) + 1
            waiting, scheduled, leased = depths[index * 3:index * 3 + 3]
            for name, value in (("waiting", waiting), ("scheduled", scheduled), ("leased", leased)):
                queue.add_metric([sid, tenant or "", name], value)
        sessions = GaugeMetricFamily("waorch_sessions", "Sessions by status.", labels=["status"])
        for status, count in sorted(by_status.items()):
            sessions.add_metric([status], count)
        yield sessions
        yield GaugeMetricFamily("waorch_sessions_desired_active",
                                "Sessions that should be running (sessions:active).", value=active)
        yield queue

    def _proxies(self, urls: list[str], available: int) -> Iterator:
        pipe = self.r.pipeline(transaction=False)
        for url in urls:
            pipe.get(keys.proxy_status(url))
            pipe.scard(proxy_sessions_key(url))
            pipe.get(proxy_fails_key(url))
        found = pipe.execute()
        ceiling = settings.get().proxy_ceiling
        by_status = dict.fromkeys(PROXY_STATUSES, 0)
        # labelled by the proxy id (hash prefix): URLs may carry credentials
        up = GaugeMetricFamily("waorch_proxy_up", "1 when the proxy is OK.", labels=["proxy"])
        load = GaugeMetricFamily("waorch_proxy_sessions", "Sessions placed on the proxy.", labels=["proxy"])
        fails = GaugeMetricFamily("waorch_proxy_consecutive_failures",
                                  "Failed health checks/reports in a row.", labels=["proxy"])
        free = 0
        for index, url in enumerate(urls):
            status, count, failures = found[index * 3:index * 3 + 3]
            status = status if status in PROXY_STATUSES else "UNKNOWN"
            by_status[status] += 1
            pid = proxy_id(url)
            up.add_metric([pid], 1 if status == "OK" else 0)
            load.add_metric([pid], count)
            fails.add_metric([pid], _int(failures))
            if status == "OK":
                free += max(0, ceiling - count)
        proxies = GaugeMetricFamily("waorch_proxies", "Proxies by health status.", labels=["status"])
        for status in PROXY_STATUSES:
            proxies.add_metric([status], by_status[status])
        yield proxies
        yield up
        yield load
        yield fails
        yield GaugeMetricFamily("waorch_proxy_free_slots",
                                "Sessions that could still be placed on OK proxies.", value=free)
        yield GaugeMetricFamily("waorch_proxies_available",
                                "OK proxies with a free slot (proxies:available).", value=available)
        yield GaugeMetricFamily("waorch_proxy_ceiling", "Most sessions per proxy.", value=ceiling)

    def _celery(self, tasks: dict, last_runs: dict, queue_lengths: list[int], unacked: int) -> Iterator:
        queues = GaugeMetricFamily("waorch_celery_queue_length",
                                   "Task messages waiting in each Celery queue (broker lists).",
                                   labels=["queue"])
        steps = len(_PRIORITY_SUFFIXES)
        for index, queue in enumerate(CELERY_QUEUES):
            queues.add_metric([queue], sum(queue_lengths[index * steps:(index + 1) * steps]))
        yield queues
        yield GaugeMetricFamily("waorch_celery_unacked",
                                "Task messages delivered to a worker and not yet acknowledged.",
                                value=unacked)
        counted = CounterMetricFamily("waorch_celery_tasks", "Celery task outcomes by task name.",
                                      labels=["task", "state"])
        for field, value in sorted(tasks.items()):
            name, _, state = field.rpartition("|")
            counted.add_metric([name, state], _int(value))
        yield counted
        last = GaugeMetricFamily("waorch_celery_task_last_success_timestamp_seconds",
                                 "Unix time each task last succeeded (periodic ones show beat is alive).",
                                 labels=["task"])
        for name, at in sorted(last_runs.items()):
            last.add_metric([name], float(at))
        yield last

    def _http(self, requests: dict, durations: dict) -> Iterator:
        counted = CounterMetricFamily("waorch_http_requests", "Gateway requests answered.",
                                      labels=["endpoint", "method", "status"])
        for field, value in sorted(requests.items()):
            endpoint, method, status = field.rsplit("|", 2)
            counted.add_metric([endpoint, method, status], _int(value))
        yield counted
        yield labelled_histogram("waorch_http_request_duration_seconds",
                                 "Seconds the gateway took to answer (claim long-polls wait up to 25 s).",
                                 "endpoint", durations, HTTP_BUCKETS)


def labelled_histogram(name: str, doc: str, label: str, stored: dict,
                       buckets: tuple[float, ...]) -> HistogramMetricFamily:
    """One histogram per label value, from a HASH of "<value>|b:<le>" counts and "<value>|sum"."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value in histograms.labelled(stored):
        family.add_metric([value], histograms.cumulative(stored, buckets, f"{value}|"),
                          sum_value=float(stored.get(f"{value}|sum") or 0))
    return family


def render(r: redis.Redis) -> bytes:
    """The Prometheus text exposition of everything; raises redis errors when Redis is down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(r))
    return generate_latest(registry)
