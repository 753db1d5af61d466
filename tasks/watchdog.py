"""Beat task: the watchdog round (every 15 s)."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.fleet import watchdog as watchdog_logic

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
