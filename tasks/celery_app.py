"""The Celery application (`celery -A tasks.celery_app worker`)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from waorch.core import redis_client, settings
from waorch.core.redis_urls import celery_broker_settings
from waorch.metrics import celery_tasks as task_metrics

# The task modules (the consumers): workers and beat import them at start. waorch publishes by
# task name (waorch.core.jobs) and never imports them.
TASK_MODULES = ("tasks.dispatch", "tasks.maintenance", "tasks.orchestration", "tasks.watchdog",
                "tasks.events", "tasks.policy", "tasks.alerts", "tasks.backups")
app = Celery("waorch", include=TASK_MODULES)
app.config_from_object("celeryconfig")


task_metrics.connect()  # task outcomes counted in Redis for GET /metrics


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # Pools inherited across fork would share sockets between processes.
    redis_client.reset_clients()


def use_broker(url: str) -> None:
    """Point this process's Celery app at another Redis (tests switch Redis between cases)."""
    broker = celery_broker_settings(url, {"visibility_timeout": settings.get().visibility_timeout})
    if app.conf.broker_url == broker["broker_url"]:
        return
    app.conf.broker_url = broker["broker_url"]
    app.conf.broker_transport_options = broker["broker_transport_options"]
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
