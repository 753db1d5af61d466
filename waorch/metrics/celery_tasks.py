"""Celery task outcomes and run times counted in Redis (fleet-wide; read by GET /metrics as
waorch_celery_tasks and waorch_celery_task_duration_seconds)."""

from __future__ import annotations

import logging
import time

import redis
from celery.signals import task_postrun, task_prerun

from waorch.core import histograms, keys
from waorch.core.redis_client import get_redis

log = logging.getLogger(__name__)
# one task run: dispatch and events take milliseconds, backups and proxy checks up to minutes
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
# Celery's state of a finished run -> the outcome counted (other states, e.g. IGNORED, are not)
OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}
_started: dict[str, float] = {}  # task id -> perf_counter at its start, in this worker process


def record(r: redis.Redis, task_name: str, state: str, seconds: float, now: float | None = None) -> None:
    """One finished run of `task_name` in Celery state `state` that took `seconds`: one MULTI."""
    pipe = r.pipeline(transaction=True)
    outcome = OUTCOMES.get(state)
    if outcome:
        pipe.hincrby(keys.METRICS_CELERY_TASKS, f"{task_name}|{outcome}", 1)
    if outcome == "succeeded":  # `waorch doctor` tells a live beat by its periodic tasks' last runs
        pipe.hset(keys.METRICS_CELERY_LAST, task_name, f"{time.time() if now is None else now:.3f}")
    pipe.hincrby(keys.METRICS_CELERY_DURATION, histograms.bucket_field(seconds, BUCKETS, f"{task_name}|"), 1)
    pipe.hincrbyfloat(keys.METRICS_CELERY_DURATION, f"{task_name}|sum", seconds)
    pipe.execute()


def last_success(r: redis.Redis) -> dict[str, float]:
    """Unix time each task last succeeded (any worker)."""
    return {name: float(at) for name, at in r.hgetall(keys.METRICS_CELERY_LAST).items()}


def _before(task_id=None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _after(task_id=None, task=None, state=None, **_: object) -> None:
    began = _started.pop(task_id, None) if task_id else None
    if began is None:
        return
    name = getattr(task, "name", None) or str(task)
    try:
        record(get_redis(), name, str(state), time.perf_counter() - began)
    except (redis.RedisError, OSError) as exc:  # a lost sample must never fail the task
        log.warning("could not count %s of %s: %s", state, name, exc.__class__.__name__)


def connect() -> None:
    """Count and time every task run of this process (called once by tasks.celery_app)."""
    # weak=False: the receivers are module functions, kept alive anyway; dispatch_uid: once only
    task_prerun.connect(_before, weak=False, dispatch_uid="waorch.metrics.celery_tasks.before")
    task_postrun.connect(_after, weak=False, dispatch_uid="waorch.metrics.celery_tasks.after")
