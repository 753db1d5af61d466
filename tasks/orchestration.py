"""Orchestrator tasks: proxy health checks (beat every 5 min, and on demand), queued runner actions."""

from __future__ import annotations

from tasks.celery_app import app
from waorch.core.redis_client import get_redis
from waorch.fleet import proxy_failover
from waorch.proxies.pool import ProxyNotFound, ProxyPool
from waorch.runners import actions as runner_actions

LOCK = "lock:check_proxies"


@app.task(name="tasks.orchestration.check_proxies", ignore_result=True)
def check_proxies() -> int:
    """Check every proxy through a real connection; returns how many were checked."""
    r = get_redis()
    if not r.set(LOCK, "1", nx=True, ex=600):
        return 0
    try:
        return len(proxy_failover.check_all(r))
    finally:
        r.delete(LOCK)


@app.task(name="tasks.orchestration.check_proxy", ignore_result=True)
def check_proxy(proxy_id: str) -> str | None:
    """Check one proxy (by id) now; its status afterwards, None when it is gone."""
    r = get_redis()
    try:
        url = ProxyPool(r).resolve(proxy_id)
    except ProxyNotFound:
        return None
    return proxy_failover.check_proxy(r, url)["status"]


@app.task(name=runner_actions.TASK, ignore_result=True, acks_late=True)
def run_session_action(session_id: str, action: str) -> str:
    """Drive the runner here for one session (WAORCH_RUNNER_ACTIONS=queue); returns what it did."""
    return runner_actions.perform(get_redis(), session_id, action)
