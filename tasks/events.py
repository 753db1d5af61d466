"""Client webhook delivery tasks (queue `events`): thin wrappers over waorch.webhooks.delivery."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.webhooks import delivery as webhook_delivery
from waorch.webhooks import events as client_events

THROTTLE_WAIT = 1.0  # seconds before a delivery that found no free slot on its worker tries again


@app.task(name="tasks.events.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver(sub_id: str, lane: int) -> str:
    """Deliver what is due on one lane of one subscription; schedule what follows."""
    r = get_redis()
    with webhook_delivery.worker_slot(r, deliver.request.hostname) as got:
        if not got:
            enqueue(sub_id, lane, countdown=THROTTLE_WAIT)
            return "throttled"
        run = webhook_delivery.deliver_lane(r, sub_id, int(lane))
    if run.outcome == "more":
        enqueue(sub_id, lane)
    elif run.outcome == "retry" and run.retry_in is not None \
            and run.retry_in <= webhook_delivery.SELF_SCHEDULE_MAX:
        enqueue(sub_id, lane, countdown=run.retry_in)
    return run.outcome


@app.task(name="tasks.events.sweep")
def sweep() -> int:
    """Hand every lane whose retry time has come (or whose task got lost) to a delivery task."""
    due = webhook_delivery.claim_due(get_redis())
    for sub_id, lane in due:
        enqueue(sub_id, lane)
    return len(due)


@app.task(name="tasks.events.emit_pending")
def emit_pending() -> int:
    """Emit the client events of changes whose hook never ran (its process died in between)."""
    return client_events.sweep_pending(get_redis())


def enqueue(sub_id: str, lane: int, countdown: float | None = None) -> None:
    # no publish retries: the caller may be sending messages; the sweep covers a lost publish
    deliver.apply_async(args=[sub_id, int(lane)], queue="events", countdown=countdown, retry=False)
