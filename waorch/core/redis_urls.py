"""REDIS_URL in either form: a plain Redis URL, or Redis Sentinel.

    redis+sentinel://[[user]:password@]host1[:port1],host2[:port2],.../<master name>[/<db>]
        [?sentinel_password=...]

Ports default to 26379 and the database to 0. The user and password are the Redis primary's
(and its replicas'); `sentinel_password` is for sentinels that have their own `requirepass`.
Every process (gateway, workers, beat, the simfleet runner, the CLI) builds its Redis client with
`redis_client_for` and its Celery broker settings with `celery_broker_settings`, so a Sentinel
URL works wherever REDIS_URL is read. Redis Cluster is out of scope (docs/redis-keys.md).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import redis
from redis.sentinel import Sentinel

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# The options every REDIS_URL client gets (waorch/redis_client.py): long reads for blocking
# commands and long-polls, a short connect so a dead host is noticed quickly.
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 3,
    "socket_timeout": 30,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}
# Questions to a sentinel are small and quick; one that does not answer is skipped for the next.
SENTINEL_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 3}

_MASTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9][A-Za-z0-9.-]*)")
_QUERY_PARAMETERS = {"sentinel_password"}


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed `redis+sentinel://` URL. Passwords are left out of repr()."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a `redis+sentinel://` URL; ValueError says what is wrong (never echoing a password)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != SENTINEL_SCHEME:
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    rest, _, query = rest.partition("?")
    if "#" in query or "#" in rest:
        raise ValueError("a Sentinel URL has no #fragment")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        # as redis-py reads redis://user:pw@host (and redis://user@host: a user name only)
        user_part, colon, password_part = userinfo.partition(":")
        username = unquote(user_part) or None
        password = unquote(password_part) if colon else None
    sentinels = tuple(_parse_host(item) for item in hosts.split(","))
    segments = path.split("/") if path else []
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise ValueError("a Sentinel URL names its master: redis+sentinel://host:26379/<master>/<db>")
    if len(segments) > 2:
        raise ValueError("a Sentinel URL's path is /<master>/<db>, nothing after the db")
    master = unquote(segments[0])
    if not _MASTER_NAME.fullmatch(master):
        raise ValueError(f"Sentinel master name {master!r}: use letters, digits, '.', '_' and '-'")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"Sentinel URL database {segments[1]!r}: a number (0, 1, ...)")
        db = int(segments[1])
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - _QUERY_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown Sentinel URL parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_QUERY_PARAMETERS))})")
    return SentinelUrl(sentinels=sentinels, master=master, db=db, username=username, password=password,
                       sentinel_password=options.get("sentinel_password") or None)


def _parse_host(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("a Sentinel URL lists its sentinels as host:port,host:port (one is empty)")
    match = _HOST.match(item)
    if not match:
        raise ValueError(f"sentinel address {item!r}: not a host name or [IPv6] address")
    host = match.group("v6") or match.group("name")
    rest = item[match.end():]
    if not rest:
        return host, DEFAULT_SENTINEL_PORT
    if not rest.startswith(":") or not rest[1:].isdigit():
        raise ValueError(f"sentinel address {item!r}: expected host:port")
    port = int(rest[1:])
    if not 0 < port < 65536:
        raise ValueError(f"sentinel address {item!r}: port out of range")
    return host, port


def validate_redis_url(url: str) -> None:
    """Raise ValueError when `url` is neither a Sentinel URL nor one redis-py accepts."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ValueError(f"REDIS_URL: {exc}") from None


def redact(url: str) -> str:
    """The URL with any password replaced by *** (safe for logs and doctor output)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc_end = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        shown = url
    else:
        user, colon, _ = userinfo.partition(":")
        auth = f"{user}:***" if colon else "***"
        shown = f"{scheme}://{auth}@{hosts}{tail}"
    return re.sub(r"(sentinel_password=)[^&#]*", r"\1***", shown)


class _SentinelRedis(redis.Redis):
    """A client of the Sentinel-managed primary that also closes its connections to the sentinels."""

    def close(self) -> None:
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        super().close()
        if manager is None:
            return
        for sentinel in manager.sentinels:
            with contextlib.suppress(redis.RedisError, OSError):
                sentinel.close()


def redis_client_for(url: str, decode_responses: bool = True, **overrides: Any) -> redis.Redis:
    """A redis.Redis for REDIS_URL with CLIENT_OPTIONS (`overrides` win). For a Sentinel URL it
    follows the current primary: after a failover, the next connection asks the sentinels again."""
    options = {**CLIENT_OPTIONS, "decode_responses": decode_responses, **overrides}
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    sentinel_kwargs = dict(SENTINEL_OPTIONS)
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    manager = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(parsed.master, redis_class=_SentinelRedis, db=parsed.db,
                              username=parsed.username, password=parsed.password, **options)


def celery_broker_settings(url: str, transport_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Celery's `broker_url` and `broker_transport_options` for REDIS_URL.

    A plain URL is the broker URL as it is. A Sentinel URL becomes kombu's sentinel transport,
    `sentinel://[user:pw@]h1:p1/<db>;sentinel://[user:pw@]h2:p2/<db>`, with the master name (and
    the sentinels' own password) in the transport options; kombu takes the db and the primary's
    credentials from the first entry, repeated on each so that any order works.
    """
    options = dict(transport_options or {})
    if not is_sentinel_url(url):
        return {"broker_url": url, "broker_transport_options": options}
    parsed = parse_sentinel_url(url)
    auth = ""
    if parsed.username is not None or parsed.password is not None:
        auth = f"{quote(parsed.username or '', safe='')}:{quote(parsed.password or '', safe='')}@"
    broker_url = ";".join(f"sentinel://{auth}{_netloc_host(host)}:{port}/{parsed.db}"
                          for host, port in parsed.sentinels)
    sentinel_kwargs = dict(SENTINEL_OPTIONS)
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    options.update({
        "master_name": parsed.master,
        "sentinel_kwargs": sentinel_kwargs,
        # without a socket timeout a publish can wait forever on a primary that vanished without
        # closing its connections (a host that died, not a killed process)
        "socket_connect_timeout": CLIENT_OPTIONS["socket_connect_timeout"],
        "socket_timeout": CLIENT_OPTIONS["socket_timeout"],
        "retry_on_timeout": True,
    })
    return {"broker_url": broker_url, "broker_transport_options": options}


def _netloc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
