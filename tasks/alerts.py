"""Alert delivery tasks (queue `events`): thin wrappers over waorch.alerts.delivery."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.alerts import delivery as alert_delivery
from waorch.alerts import sinks as alert_sinks
from waorch.core import keys
from waorch.core.redis_client import get_redis

BUSY_WAIT = 1.0  # another run held the sink: look again soon (it may have missed a new event)
# Follow-ups this soon are scheduled by the task itself; later ones are left to the beat sweep
# (the Redis broker redelivers tasks whose ETA lies beyond its visibility timeout).
SELF_SCHEDULE_MAX = 60.0


@app.task(name="tasks.alerts.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver(sink: str | None = None, woken: bool = False) -> dict:
    """Deliver the outbox of each configured sink (or only `sink`); schedule what follows."""
    r = get_redis()
    if woken and sink:
        r.delete(keys.alert_wake(sink))  # this is the scheduled follow-up: the next may be planned
    done = {}
    for target in alert_sinks.configured():
        if sink and target.name != sink:
            continue
        run = alert_delivery.deliver(r, target)
        done[target.name] = run.outcome
        if run.outcome == "more":
            enqueue(target.name)
        elif run.outcome == "busy":
            enqueue(target.name, BUSY_WAIT)
        elif run.outcome in ("retry", "limited") and (run.retry_in or 0) <= SELF_SCHEDULE_MAX \
                and alert_delivery.claim_wake(r, target.name, run.retry_in or 0):
            enqueue(target.name, run.retry_in, woken=True)
    return done


@app.task(name="tasks.alerts.sweep")
def sweep() -> dict:
    """Beat safety net: a run for every sink (covers lost publishes and long backoffs)."""
    return deliver()


def enqueue(sink: str, countdown: float | None = None, woken: bool = False) -> None:
    deliver.apply_async(args=[sink, woken], queue="events", countdown=countdown, retry=False)
