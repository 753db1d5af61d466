"""Anti-ban policy upkeep (queue `maintenance`): the hourly trust review."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.policy import trust


@app.task(name="tasks.maintenance.trust_review")
def trust_review() -> int:
    """Promote or demote sessions one rung by the policy's rules; returns how many changed."""
    return len(trust.review(get_redis()))
