"""Beat task: the watchdog round (every 15 s)."""

from __future__ import annotations

from tasks.celery_app import app
from waorch import watchdog as watchdog_logic
from waorch.redis_client import get_redis

LOCK = "lock:watchdog"


@app.task(name="tasks.watchdog.watchdog", ignore_result=True)
def watchdog() -> dict:
    """Reconcile desired and actual workers; overlapping rounds are skipped."""
    r = get_redis()
    if not r.set(LOCK, "1", nx=True, ex=60):
        return {"skipped": "another watchdog round is running"}
    try:
        return watchdog_logic.reconcile(r)
    finally:
        r.delete(LOCK)
