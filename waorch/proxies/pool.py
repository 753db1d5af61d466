"""The proxy inventory: URL validation and redaction, and the pool kept in Redis by Lua scripts.

Keys (SPEC section 8 plus waorch's own): proxies:all, proxies:available, phone:proxy:<phone>,
counter:proxy:<url>, proxy:status:<url> = OK|BAD, proxy:sessions:<url> (SET of session ids),
proxy:fails:<url> (consecutive failures), proxy:meta:<url> (HASH), proxy:id:<id> -> url.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from urllib.parse import quote, unquote, urlsplit

import redis

from waorch.core import keys, lua, settings

SCHEMES = ("socks5h", "socks5", "http")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


ADD = lua.Script("proxies/add", args=("url", "proxy_id", "now", "ceiling", "redacted"))
REMOVE = lua.Script("proxies/remove", args=("url",))
ALLOCATE = lua.Script("proxies/allocate", args=("session_id", "phone", "ceiling", "leave"))
RELEASE = lua.Script("proxies/release", args=("session_id", "url", "ceiling"))
REPORT = lua.Script("proxies/report", args=("url", "ok", "threshold", "ceiling", "now", "error", "source"))

class InvalidProxyUrl(ValueError):
    """A proxy URL that waorch cannot use; the message says why (and never repeats secrets)."""


class ProxyNotFound(LookupError):
    pass


def normalize_url(text: str) -> str:
    """The canonical form of a proxy URL, or InvalidProxyUrl."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidProxyUrl("proxy url is empty")
    text = text.strip()
    if len(text) > 512:
        raise InvalidProxyUrl("proxy url is too long")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidProxyUrl("proxy url is malformed (port must be 1-65535)") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidProxyUrl(f"scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    host = parts.hostname or ""
    if not host:
        raise InvalidProxyUrl("proxy url has no host")
    if not _valid_host(host):
        raise InvalidProxyUrl("proxy host is not a valid name or address")
    if port is None or not 0 < port < 65536:
        raise InvalidProxyUrl("proxy url needs a port (1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxyUrl("proxy url must not have a path, query or fragment")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if (user is None) != (password is None) or user == "":
        raise InvalidProxyUrl("give both a user name and a password, or neither")
    if user is not None and (len(user) > 255 or len(password or "") > 255):
        raise InvalidProxyUrl("proxy user name and password are at most 255 bytes each")
    shown_host = f"[{host}]" if ":" in host else host.lower()
    auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
    return f"{scheme}://{auth}{shown_host}:{port}"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def redact(url: str) -> str:
    """The URL with any credentials replaced by `***` (safe for logs and API answers)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port
    except ValueError:
        return "<invalid proxy url>"
    shown_host = f"[{host}]" if ":" in host else host
    auth = "***:***@" if parts.username is not None or parts.password is not None else ""
    return f"{parts.scheme}://{auth}{shown_host}" + (f":{port}" if port else "")


def proxy_id(url: str) -> str:
    """Short stable id of a proxy (first hex digits of the URL's SHA-256): safe to show."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def proxy_sessions_key(url: str) -> str:
    return f"proxy:sessions:{url}"


def proxy_fails_key(url: str) -> str:
    return f"proxy:fails:{url}"


def proxy_meta_key(url: str) -> str:
    return f"proxy:meta:{url}"


def proxy_id_key(pid: str) -> str:
    return f"proxy:id:{pid}"


class ProxyPool:
    """The proxies known to one Redis; every change goes through one Lua script."""

    def __init__(self, r: redis.Redis, ceiling: int | None = None) -> None:
        self.r = r
        self.ceiling = ceiling if ceiling is not None else settings.get().proxy_ceiling

    def add(self, url: str) -> tuple[dict, bool]:
        """Validate and add a proxy; returns (its public view, whether it is new)."""
        url = normalize_url(url)
        added = ADD(self.r, url=url, proxy_id=proxy_id(url), now=f"{time.time():.3f}", ceiling=self.ceiling,
                    redacted=redact(url))
        return self.view(url), bool(added)

    def resolve(self, id_or_url: str) -> str:
        """The stored URL for a proxy id (or URL); ProxyNotFound otherwise."""
        url = self.r.get(proxy_id_key(id_or_url))
        if url is None and "://" in id_or_url:
            try:
                candidate = normalize_url(id_or_url)
            except InvalidProxyUrl:
                candidate = None
            if candidate and self.r.sismember(keys.PROXIES_ALL, candidate):
                url = candidate
        if url is None:
            raise ProxyNotFound(f"no proxy {id_or_url if '://' not in id_or_url else redact(id_or_url)}")
        return url

    def remove(self, url: str) -> list[str]:
        """Take a proxy out of the inventory; returns the sessions still on it (to be moved)."""
        found = REMOVE(self.r, url=url)
        if found is None:
            raise ProxyNotFound(f"no proxy {redact(url)}")
        return sorted(found)

    def urls(self) -> list[str]:
        return sorted(self.r.smembers(keys.PROXIES_ALL))

    def view(self, url: str) -> dict:
        """Public view of one proxy: credentials redacted."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.proxy_status(url))
        pipe.scard(proxy_sessions_key(url))
        pipe.get(proxy_fails_key(url))
        pipe.hgetall(proxy_meta_key(url))
        pipe.sismember(keys.PROXIES_AVAILABLE, url)
        status, count, fails, meta, available = pipe.execute()
        return {
            "id": proxy_id(url), "url": redact(url), "scheme": url.split("://", 1)[0],
            "status": status or "UNKNOWN", "sessions": int(count), "ceiling": self.ceiling,
            "available": bool(available), "consecutive_failures": int(fails or 0),
            "added_at": _num(meta.get("added_at")), "last_check": _num(meta.get("last_check")),
            "last_ok": _num(meta.get("last_ok")), "last_error": meta.get("last_error") or None,
        }

    def list(self) -> list[dict]:
        return [self.view(url) for url in self.urls()]

    def allocate(self, session_id: str, phone: str, leave: str = "") -> tuple[str, str]:
        """(outcome, url): outcome 'ok', 'none' (no capacity) or 'full' (sticky proxy full)."""
        outcome, url = ALLOCATE(self.r, session_id=session_id, phone=phone, ceiling=self.ceiling, leave=leave)
        return outcome, url

    def release(self, session_id: str, url: str) -> int:
        """Free the session's slot on `url`; the phone's sticky mapping stays."""
        return int(RELEASE(self.r, session_id=session_id, url=url, ceiling=self.ceiling))

    def report(self, url: str, ok: bool, error: str = "", source: str = "check") -> tuple[str, str, int]:
        """Record health evidence; returns (status, change, consecutive failures)."""
        status, change, fails = REPORT(self.r, url=url, ok="1" if ok else "0",
                                       threshold=settings.get().proxy_fail_threshold, ceiling=self.ceiling,
                                       now=f"{time.time():.3f}", error=error[:300], source=source)
        return status, change, int(fails)

    def sessions_on(self, url: str) -> list[str]:
        return sorted(self.r.smembers(proxy_sessions_key(url)))

    def sticky(self, phone: str) -> str | None:
        return self.r.get(keys.phone_proxy(phone))

    def free_slots(self) -> int:
        """Sessions that could still be placed on OK proxies."""
        urls = self.urls()
        pipe = self.r.pipeline(transaction=False)
        for url in urls:
            pipe.get(keys.proxy_status(url))
            pipe.scard(proxy_sessions_key(url))
        found = pipe.execute()
        return sum(max(0, self.ceiling - count)
                   for status, count in zip(found[::2], found[1::2], strict=True) if status == "OK")


def _num(value: str | None) -> float | None:
    return float(value) if value else None
