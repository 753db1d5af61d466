"""Which proxy URL the neonize transport hands to whatsmeow, and which it refuses.

whatsmeow (Go, golang.org/x/net/proxy) accepts http, https and socks5 and refuses `socks5h`.
Its socks5 dialer always sends the destination as a host name (address type DOMAINNAME), so
`socks5h://` (our contract: DNS at the proxy) becomes `socks5://` for whatsmeow without any local
resolution; tests/integration/worker/test_neonize_proxy.py proves it. http(s) proxies receive
`CONNECT host:port`, also a host name. Every other scheme is refused: socks4 resolves locally,
and an unknown scheme could make whatsmeow fail open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from worker_container.transports.base import CONFIG_INVALID

# Scheme we accept → scheme whatsmeow understands. All of them put the host name on the wire.
_SCHEMES = {"socks5h": "socks5", "socks5": "socks5", "http": "http", "https": "https"}

# Read by Go's http.ProxyFromEnvironment / x/net/proxy. whatsmeow keeps the environment's HTTP
# proxy on its websocket transport even with a SOCKS proxy set (seen: the connection went
# "proxyconnect" through the SOCKS proxy to HTTPS_PROXY), so a worker refuses to start with them.
PROXY_ENV_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

ALLOW_NO_PROXY_ENV = "WAORCH_ALLOW_NO_PROXY"


class ProxyRefused(ValueError):
    """The proxy URL cannot be used without leaking traffic or DNS; `code` is the ERROR code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ProxyChoice:
    whatsmeow_url: str  # "" only when running without a proxy was explicitly allowed
    redacted: str  # safe for logs and events
    requests_url: str  # same proxy, for media fetched by the worker itself (remote DNS)


def allow_no_proxy(environ: dict[str, str] | None = None) -> bool:
    """True when WAORCH_ALLOW_NO_PROXY is set to a true value (development only)."""
    value = (environ if environ is not None else os.environ).get(ALLOW_NO_PROXY_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def redact_proxy_url(url: str) -> str:
    """`url` with any password replaced by `***`; tolerant of malformed input."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def choose_proxy(url: str, no_proxy_allowed: bool = False) -> ProxyChoice:
    """The proxy settings for whatsmeow, or ProxyRefused when `url` is missing or unsafe."""
    url = (url or "").strip()
    if not url:
        if no_proxy_allowed:
            return ProxyChoice(whatsmeow_url="", redacted="(none: WAORCH_ALLOW_NO_PROXY)", requests_url="")
        raise ProxyRefused(CONFIG_INVALID, "PROXY_URL is empty: a session never connects without its "
                                           "sticky proxy (set WAORCH_ALLOW_NO_PROXY=true for development)")
    redacted = redact_proxy_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ProxyRefused(CONFIG_INVALID, f"PROXY_URL is not a valid URL ({exc}): {redacted}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ProxyRefused(CONFIG_INVALID, f"proxy scheme {scheme or '(none)'!r} is refused: it would "
                                           f"resolve names locally or is unsupported; use socks5h:// "
                                           f"({redacted})")
    if not parts.hostname:
        raise ProxyRefused(CONFIG_INVALID, f"PROXY_URL has no host: {redacted}")
    if port is None:
        raise ProxyRefused(CONFIG_INVALID, f"PROXY_URL has no port: {redacted}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyRefused(CONFIG_INVALID,
                           f"PROXY_URL must be scheme://[user:password@]host:port: {redacted}")
    whatsmeow_url = _with_scheme(parts, _SCHEMES[scheme])
    requests_url = _with_scheme(parts, "socks5h" if scheme.startswith("socks5") else scheme)
    return ProxyChoice(whatsmeow_url=whatsmeow_url, redacted=redacted, requests_url=requests_url)


def _with_scheme(parts: SplitResult, scheme: str) -> str:
    return f"{scheme}://{parts.netloc}"


def initial_environment() -> dict[str, str]:
    """The environment this process started with: what the Go runtime reads (os.environ if unknown)."""
    # A Go c-shared library copies the process's initial environment block when it loads;
    # unsetenv() from Python afterwards (or before) does not change what whatsmeow sees.
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    env = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def environment_proxies(environ: dict[str, str]) -> list[str]:
    """The proxy variables set (non-empty) in `environ`."""
    return [name for name in PROXY_ENV_VARS if environ.get(name, "").strip()]
