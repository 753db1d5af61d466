"""Publishing Celery work by task name: the one way from waorch to Celery.

waorch never imports `tasks/` (the consumers); it names the task, as Celery's `send_task` allows,
so importing a waorch module never builds the worker's Celery app with all its task modules.
One producer app per broker URL (tests switch Redis between cases).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery

from waorch.core import settings
from waorch.core.redis_urls import celery_broker_settings

_lock = threading.Lock()
_producers: dict[str, Celery] = {}


def producer(broker_url: str | None = None) -> Celery:
    """The Celery app this process publishes with (celeryconfig's settings, REDIS_URL's broker)."""
    url = broker_url or settings.get().redis_url
    app = _producers.get(url)
    if app is None:
        with _lock:
            app = _producers.get(url)
            if app is None:
                app = Celery("waorch-producer", set_as_current=False)
                app.config_from_object("celeryconfig")
                app.conf.update(**celery_broker_settings(
                    url, {"visibility_timeout": settings.get().visibility_timeout}))
                _producers[url] = app
    return app


def publish(task: str, args: Sequence[Any] = (), *, queue: str | None = None,
            countdown: float | None = None, retry: bool = True) -> None:
    """Queue `task` by name; raises what the broker raises (callers decide what a lost publish costs)."""
    producer().send_task(task, args=list(args), queue=queue, countdown=countdown, retry=retry)
