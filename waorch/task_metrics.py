"""Celery task outcomes counted in Redis (fleet-wide; read by GET /metrics as waorch_celery_tasks)."""

from __future__ import annotations

import logging
import time

import redis
from celery.signals import task_failure, task_postrun, task_prerun, task_retry, task_success

from waorch import histograms, keys
from waorch.redis_client import get_redis

log = logging.getLogger("waorch.task_metrics")
# one task run: dispatch and events take milliseconds, backups and proxy checks up to minutes
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
_started: dict[str, float] = {}  # task id -> perf_counter at its start, in this worker process


def count(r: redis.Redis, task_name: str, state: str, now: float | None = None) -> None:
    """One more `state` outcome (succeeded, failed, retried) of the task named `task_name`."""
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(keys.METRICS_CELERY_TASKS, f"{task_name}|{state}", 1)
    if state == "succeeded":  # `waorch doctor` tells a live beat by its periodic tasks' last runs
        pipe.hset(keys.METRICS_CELERY_LAST, task_name, f"{time.time() if now is None else now:.3f}")
    pipe.execute()


def last_success(r: redis.Redis) -> dict[str, float]:
    """Unix time each task last succeeded (any worker)."""
    return {name: float(at) for name, at in r.hgetall(keys.METRICS_CELERY_LAST).items()}


def _record(sender, state: str) -> None:
    name = getattr(sender, "name", None) or str(sender)
    try:
        count(get_redis(), name, state)
    except (redis.RedisError, OSError) as exc:  # a lost sample must never fail the task
        log.warning("could not count %s of %s: %s", state, name, exc.__class__.__name__)


def _succeeded(sender=None, **_: object) -> None:
    _record(sender, "succeeded")


def _failed(sender=None, **_: object) -> None:
    _record(sender, "failed")


def _retried(sender=None, **_: object) -> None:
    _record(sender, "retried")


def observe_duration(r: redis.Redis, task_name: str, seconds: float) -> None:
    """One run of the task named `task_name` took `seconds` (waorch_celery_task_duration_seconds)."""
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(keys.METRICS_CELERY_DURATION, histograms.bucket_field(seconds, BUCKETS, f"{task_name}|"), 1)
    pipe.hincrbyfloat(keys.METRICS_CELERY_DURATION, f"{task_name}|sum", seconds)
    pipe.execute()


def _before(task_id=None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _after(task_id=None, task=None, **_: object) -> None:
    began = _started.pop(task_id, None) if task_id else None
    if began is None:
        return
    name = getattr(task, "name", None) or str(task)
    try:
        observe_duration(get_redis(), name, time.perf_counter() - began)
    except (redis.RedisError, OSError) as exc:
        log.warning("could not time %s: %s", name, exc.__class__.__name__)


def connect() -> None:
    """Count outcomes of every task this process runs (called once by tasks.celery_app)."""
    # weak=False: the receivers are module functions, kept alive anyway; dispatch_uid: once only
    task_success.connect(_succeeded, weak=False, dispatch_uid="waorch.task_metrics.succeeded")
    task_failure.connect(_failed, weak=False, dispatch_uid="waorch.task_metrics.failed")
    task_retry.connect(_retried, weak=False, dispatch_uid="waorch.task_metrics.retried")
    task_prerun.connect(_before, weak=False, dispatch_uid="waorch.task_metrics.before")
    task_postrun.connect(_after, weak=False, dispatch_uid="waorch.task_metrics.after")
