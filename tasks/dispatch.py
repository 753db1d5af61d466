"""Dispatch tasks (queue `dispatch`, the seed's gateway:jobs)."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.sending import dispatch as dispatching


@app.task(name="tasks.dispatch.dispatch_messages", acks_late=True, reject_on_worker_lost=True)
def dispatch_messages(msg_ids: list[str]) -> dict[str, int]:
    """Route accepted messages to sender sessions; safe to run twice for the same ids."""
    r = get_redis()
    outcomes: dict[str, int] = {}
    for msg_id in msg_ids:
        outcome = dispatching.dispatch_message(r, msg_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes

