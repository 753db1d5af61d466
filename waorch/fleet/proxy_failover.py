"""What follows a proxy health result: BAD after repeated failures, then its sessions move.

Consecutive failures reaching WAORCH_PROXY_FAIL_THRESHOLD make the proxy BAD: alert "proxy
burned", its sessions get new proxies (new sticky mapping) and are restarted. A worker's
PROXY_FAILED is evidence only: it asks for a real check (waorch.proxies.health) instead of
burning a proxy itself, so a dead target cannot burn them all.
"""

from __future__ import annotations

import logging

import redis

from waorch.alerts import events as alert_events
from waorch.core import jobs
from waorch.fleet import lifecycle
from waorch.proxies import health
from waorch.proxies.pool import ProxyPool, proxy_id, redact
from waorch.sessions import registry as sessions

log = logging.getLogger(__name__)


def check_proxy(r: redis.Redis, url: str) -> dict:
    """Check one proxy now, record the result and act on a change; returns its public view."""
    return _apply(r, url, health.probe(url))


def check_all(r: redis.Redis, workers: int = 16) -> list[dict]:
    """Check every proxy of the inventory (probes run in parallel)."""
    urls = ProxyPool(r).urls()
    results = health.probe_all(urls, workers)
    return [_apply(r, url, error) for url, error in zip(urls, results, strict=True)]


def _apply(r: redis.Redis, url: str, error: str | None) -> dict:
    pool = ProxyPool(r)
    status, change, fails = pool.report(url, error is None, error or "", source="check")
    if change == "burned":
        on_burned(r, url, error or "")
    elif change == "recovered":
        alert_events.resolve(r, alert_events.PROXY_BURNED, proxy_id(url),
                             f"proxy {redact(url)} works again")
        lifecycle.check_inventory(r)
    view = pool.view(url)
    view["change"] = change or None
    return view


def worker_evidence(r: redis.Redis, url: str, detail: str) -> str:
    """A worker's PROXY_FAILED counts as a failure; at the threshold a real check is requested."""
    _status, change, _fails = ProxyPool(r).report(url, False, f"worker: {health.scrub(detail, url)}",
                                                  source="worker")
    if change == "suspect":
        request_check(url)
    return change


def request_check(url: str) -> bool:
    """Queue an on-demand check of one proxy (Celery); False when the broker is unreachable."""
    try:
        jobs.publish("tasks.orchestration.check_proxy", [proxy_id(url)])
        return True
    except Exception as exc:  # noqa: BLE001 - the periodic check still covers it
        log.warning("could not queue a check of %s: %s", redact(url), exc.__class__.__name__)
        return False


def on_burned(r: redis.Redis, url: str, error: str) -> dict:
    """Alert, then move the BAD proxy's sessions to other proxies and restart them."""
    log.warning("proxy %s is BAD: %s", redact(url), error)
    alert_events.raise_alert(r, alert_events.PROXY_BURNED, proxy_id(url),
                             f"proxy burned: {redact(url)} ({error})", severity="critical",
                             data={"proxy_id": proxy_id(url)})
    return relocate_sessions(r, url, "proxy BAD")


def relocate_sessions(r: redis.Redis, url: str, reason: str) -> dict:
    """Give every session on `url` a new proxy (new sticky mapping) and restart it."""
    pool = ProxyPool(r)
    moved, stuck = [], []
    for session_id in pool.sessions_on(url):
        session = sessions.get_session(r, session_id)
        if session is None:
            pool.release(session_id, url)  # a leftover of a deleted session
            continue
        outcome, new_url = pool.allocate(session_id, session["phone"], leave=url)
        if outcome == "ok":
            moved.append(session_id)
            log.info("session %s moved from %s to %s", session_id, redact(url), redact(new_url))
            lifecycle.restart_session(r, session_id, reason=f"{reason}: moved to proxy {proxy_id(new_url)}")
        else:
            stuck.append(session_id)
            sessions.transition(r, session_id, "error", fields={
                "last_error": f"no proxy capacity to leave proxy {proxy_id(url)} ({reason})"})
    if stuck:
        alert_events.raise_alert(r, alert_events.LOW_INVENTORY, "proxies",
                                 f"{len(stuck)} sessions could not leave proxy {redact(url)}: "
                                 "no free proxy slots", data={"sessions": stuck})
    lifecycle.check_inventory(r)
    return {"moved": moved, "stuck": stuck}
