"""`waorch worker`: a Celery worker on waorch's queues."""

from __future__ import annotations

import socket

import click

from waorch.core import settings
from waorch.launcher.become import become, python_module_argv

QUEUES = ("dispatch", "orchestrator", "events", "maintenance")
CELERY_APP = "tasks.celery_app:app"


def worker_argv(concurrency: int, queues: str, name: str, log_level: str) -> list[str]:
    # Mingle and gossip only add start-up delay and broker chatter; waorch coordinates via Redis.
    return python_module_argv(
        "celery", "-A", CELERY_APP, "worker", "-Q", queues, "--concurrency", str(concurrency),
        "-n", name, "--loglevel", log_level, "--without-mingle", "--without-gossip",
    )


def _queues(ctx: click.Context, param: click.Parameter, value: str) -> str:
    names = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if not names or unknown:
        raise click.BadParameter(f"choose from {','.join(QUEUES)}; unknown: {','.join(unknown)}")
    return ",".join(names)


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Worker processes [WAORCH_WORKER_CONCURRENCY].")
@click.option("--queues", default=",".join(QUEUES), show_default=True, callback=_queues)
@click.option("--name", default=None, help="Celery node name (default worker@<host>).")
def command(concurrency: int | None, queues: str, name: str | None) -> None:
    """Run a Celery worker: dispatch, orchestration, events, maintenance tasks."""
    conf = settings.load()
    become(worker_argv(concurrency or conf.worker_concurrency, queues,
                       name or f"worker@{socket.gethostname()}", conf.log_level))
