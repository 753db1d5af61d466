"""The Celery application (`celery -A tasks.celery_app worker`)."""

from __future__ import annotations

from importlib import import_module

from celery import Celery
from celery.signals import worker_process_init

from waorch import redis_client, task_metrics

app = Celery("waorch")
app.config_from_object("celeryconfig")
# Imported here (after `app` exists: they import it) so workers and beat know every task name.
TASK_MODULES = ("tasks.dispatch", "tasks.maintenance", "tasks.orchestration", "tasks.watchdog",
                "tasks.events", "tasks.policy", "tasks.alerts", "tasks.backups")
for _name in TASK_MODULES:
    import_module(_name)


task_metrics.connect()  # task outcomes counted in Redis for GET /metrics


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # Pools inherited across fork would share sockets between processes.
    redis_client.reset_clients()


def use_broker(url: str) -> None:
    """Point this process's Celery app at another Redis (tests switch Redis between cases)."""
    if app.conf.broker_url == url:
        return
    app.conf.broker_url = url
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
