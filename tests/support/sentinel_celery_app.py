"""A minimal Celery app configured from REDIS_URL through waorch.core.redis_urls, for the Sentinel
tests: `celery -A tests.support.sentinel_celery_app worker -Q probe`. Its one task records a token
in Redis (through the same URL), so a test sees which published tasks a worker ran."""

from __future__ import annotations

import os

from celery import Celery

from waorch.core.redis_urls import celery_broker_settings, redis_client_for

QUEUE = "probe"
DONE_KEY = "probe:done"

app = Celery("sentinel-probe")
app.conf.update(
    **celery_broker_settings(os.environ["REDIS_URL"], {"visibility_timeout": 300}),
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
_client = None


@app.task(name="probe.record")
def record(token: str) -> None:
    global _client
    if _client is None:
        _client = redis_client_for(os.environ["REDIS_URL"])
    _client.rpush(DONE_KEY, token)
