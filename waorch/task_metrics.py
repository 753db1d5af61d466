"""Celery task outcomes counted in Redis (fleet-wide; read by GET /metrics as waorch_celery_tasks)."""

from __future__ import annotations

import logging
import time

import redis
from celery.signals import task_failure, task_retry, task_success

from waorch import keys
from waorch.redis_client import get_redis

log = logging.getLogger("waorch.task_metrics")


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


def connect() -> None:
    """Count outcomes of every task this process runs (called once by tasks.celery_app)."""
    # weak=False: the receivers are module functions, kept alive anyway; dispatch_uid: once only
    task_success.connect(_succeeded, weak=False, dispatch_uid="waorch.task_metrics.succeeded")
    task_failure.connect(_failed, weak=False, dispatch_uid="waorch.task_metrics.failed")
    task_retry.connect(_retried, weak=False, dispatch_uid="waorch.task_metrics.retried")
