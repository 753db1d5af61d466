"""Dispatch tasks (queue `dispatch`, the seed's gateway:jobs)."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.sending import dispatch as dispatching


@app.task(name="tasks.dispatch.dispatch_messages", acks_late=True, reject_on_worker_lost=True)
def dispatch_messages(msg_ids: list[str]) -> dict[str, int]:
    """Route accepted messages to sender sessions (one Lua call per batch); safe to run twice."""
    return dict(dispatching.dispatch_batch(get_redis(), list(msg_ids)))
