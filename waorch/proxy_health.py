"""Proxy health: real SOCKS5/HTTP handshakes through each proxy, and what follows a BAD proxy.

A check opens a tunnel through the proxy to the check target (WAORCH_PROXY_CHECK_TARGET, default
the simulator's wire, else WhatsApp's web endpoint), names resolved by the proxy. Consecutive
failures reaching WAORCH_PROXY_FAIL_THRESHOLD make the proxy BAD: alert "proxy burned", its
sessions get new proxies (new sticky mapping) and are restarted.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import redis
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from waorch import alert_events, sessions, settings
from waorch.proxies import ProxyPool, proxy_id, redact

log = logging.getLogger("waorch.proxy_health")
DEFAULT_TARGET = "web.whatsapp.com:443"


def check_target() -> tuple[str, int]:
    """(host, port) that checks connect to through the proxy."""
    conf = settings.get()
    text = conf.proxy_check_target or conf.sim_wire or DEFAULT_TARGET
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"WAORCH_PROXY_CHECK_TARGET must be host:port, not {text!r}")
    return host.strip("[]"), int(port)


def probe(url: str, target: tuple[str, int] | None = None, timeout: float | None = None) -> str | None:
    """Open a tunnel through the proxy to `target`; None when it worked, else why not (no secrets)."""
    host, port = target or check_target()
    timeout = timeout if timeout is not None else settings.get().proxy_check_timeout
    # python-socks knows socks5:// only; remote DNS (socks5h semantics) is asked for with rdns.
    client_url = "socks5://" + url[len("socks5h://"):] if url.startswith("socks5h://") else url
    try:
        sock = Proxy.from_url(client_url, rdns=True).connect(host, port, timeout=timeout)
    except ProxyTimeoutError:
        return "timed out"
    except ProxyConnectionError:
        return "proxy unreachable"
    except ProxyError as exc:
        return f"proxy refused: {_safe(str(exc), url)}"
    except OSError as exc:
        return f"network error: {exc.__class__.__name__}"
    sock.close()
    return None


def _safe(text: str, url: str) -> str:
    """Error text from a client library, with anything of the URL's userinfo removed."""
    userinfo = url.split("://", 1)[-1].rpartition("@")[0]
    for part in filter(None, [userinfo, *userinfo.split(":")]):
        text = text.replace(part, "***")
    return text[:200]


def check_proxy(r: redis.Redis, url: str) -> dict:
    """Check one proxy now, record the result and act on a change; returns its public view."""
    return _apply(r, url, probe(url))


def check_all(r: redis.Redis, workers: int = 16) -> list[dict]:
    """Check every proxy of the inventory (probes run in parallel)."""
    pool = ProxyPool(r)
    urls = pool.urls()
    if not urls:
        return []
    target = check_target()
    with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as executor:
        results = list(executor.map(lambda u: probe(u, target), urls))
    return [_apply(r, url, error) for url, error in zip(urls, results, strict=True)]


def _apply(r: redis.Redis, url: str, error: str | None) -> dict:
    pool = ProxyPool(r)
    status, change, fails = pool.report(url, error is None, error or "", source="check")
    if change == "burned":
        on_burned(r, url, error or "")
    elif change == "recovered":
        alert_events.resolve(r, alert_events.PROXY_BURNED, proxy_id(url),
                             f"proxy {redact(url)} works again")
        sessions.check_inventory(r)
    view = pool.view(url)
    view["change"] = change or None
    return view


def worker_evidence(r: redis.Redis, url: str, detail: str) -> str:
    """A worker's PROXY_FAILED counts as a failure; at the threshold a real check is requested."""
    status, change, fails = ProxyPool(r).report(url, False, f"worker: {_safe(detail, url)}", source="worker")
    if change == "suspect":
        request_check(url)
    return change


def request_check(url: str) -> bool:
    """Queue an on-demand check of one proxy (Celery); False when the broker is unreachable."""
    try:
        from tasks.celery_app import app  # noqa: PLC0415  (only where Celery is configured)

        app.send_task("tasks.orchestration.check_proxy", args=[proxy_id(url)])
        return True
    except Exception as exc:  # the periodic check still covers it
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
            sessions.restart_session(r, session_id, reason=f"{reason}: moved to proxy {proxy_id(new_url)}")
        else:
            stuck.append(session_id)
            sessions.transition(r, session_id, "error", fields={
                "last_error": f"no proxy capacity to leave proxy {proxy_id(url)} ({reason})"})
    if stuck:
        alert_events.raise_alert(r, alert_events.LOW_INVENTORY, "proxies",
                                 f"{len(stuck)} sessions could not leave proxy {redact(url)}: "
                                 "no free proxy slots", data={"sessions": stuck})
    sessions.check_inventory(r)
    return {"moved": moved, "stuck": stuck}
