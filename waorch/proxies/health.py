"""Proxy health probes: a real SOCKS5/HTTP handshake and tunnel through each proxy.

A probe opens a tunnel through the proxy to the check target (WAORCH_PROXY_CHECK_TARGET, default
the simulator's wire, else WhatsApp's web endpoint), names resolved by the proxy. What a result
changes (BAD after WAORCH_PROXY_FAIL_THRESHOLD failures, sessions moved) is waorch.fleet.proxy_failover.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from waorch.core import settings

log = logging.getLogger(__name__)
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
        return f"proxy refused: {scrub(str(exc), url)}"
    except OSError as exc:
        return f"network error: {exc.__class__.__name__}"
    sock.close()
    return None


def scrub(text: str, url: str) -> str:
    """Error text from a client library, with anything of the URL's userinfo removed."""
    userinfo = url.split("://", 1)[-1].rpartition("@")[0]
    for part in filter(None, [userinfo, *userinfo.split(":")]):
        text = text.replace(part, "***")
    return text[:200]


def probe_all(urls: list[str], workers: int = 16) -> list[str | None]:
    """`probe` every proxy in parallel; the results in the order of `urls`."""
    if not urls:
        return []
    target = check_target()
    with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as executor:
        return list(executor.map(lambda u: probe(u, target), urls))
