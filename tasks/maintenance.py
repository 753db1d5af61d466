"""Periodic upkeep of the message pipeline (queue `maintenance`)."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core import settings
from waorch.core.redis_client import get_redis
from waorch.messages import records as messages
from waorch.sending import dispatch as dispatching
from waorch.sending import rerouting


@app.task(name="tasks.maintenance.pump_queues")
def pump_queues() -> int:
    """Reserve send slots for messages waiting in per-session queues."""
    return dispatching.pump_session_queues(get_redis())


@app.task(name="tasks.maintenance.requeue_expired")
def requeue_expired() -> int:
    """Return messages whose worker died holding the lease to their outbox."""
    return dispatching.requeue_all_expired(get_redis())


@app.task(name="tasks.maintenance.recover_unrouted")
def recover_unrouted() -> int:
    """Re-dispatch accepted messages whose dispatch task never ran (e.g. publish failed)."""
    return dispatching.recover_unrouted(get_redis(), settings.get().recover_after)


@app.task(name="tasks.maintenance.reroute_lost_sessions")
def reroute_lost_sessions() -> int:
    """Move unsent messages of dead, deleted or long-paused sessions to another sender (safety net)."""
    return rerouting.sweep(get_redis())


@app.task(name="tasks.maintenance.prune_messages")
def prune_messages() -> int:
    """Forget messages that finished longer than WAORCH_MESSAGE_RETENTION ago."""
    return messages.prune_finished(get_redis(), settings.get().message_retention)
