"""The worker's configuration, read once from its environment (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from waorch.core import session_store
from worker_container.transports.base import CONFIG_INVALID, PROXY_FAILED

KNOWN_TRANSPORTS = ("neonize", "sim")
PROXY_SCHEMES = ("socks5h", "socks5", "http", "https")
MAX_PING_INTERVAL = 15.0  # the watchdog expects a PING at least this often
MAX_CLAIM_WAIT = 25.0  # the claim endpoint's longest long-poll

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PHONE = re.compile(r"\d{6,15}")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ConfigError(ValueError):
    """A bad environment variable; `code` is the ERROR code the worker reports for it."""

    def __init__(self, field_name: str, message: str, code: str = CONFIG_INVALID) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.code = code


def redact_url(url: str) -> str:
    """`url` with any user:password part replaced by `***` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc="***@" + host))


def _get(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or "").strip()


def _http_url(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(name, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, "must be an http:// or https:// URL with a host")
    return value


def _proxy_url(environ: Mapping[str, str]) -> str:
    value = _get(environ, "PROXY_URL")
    if not value:
        if _get(environ, "WAORCH_ALLOW_NO_PROXY").lower() in _TRUE:
            return ""  # development only: the transport decides whether it accepts this
        raise ConfigError("PROXY_URL", "is required (the worker never connects without its proxy)",
                          PROXY_FAILED)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError("PROXY_URL", f"is not a valid proxy URL ({redact_url(value)})",
                          PROXY_FAILED) from None
    if parts.scheme.lower() not in PROXY_SCHEMES:
        raise ConfigError("PROXY_URL", f"scheme must be one of {', '.join(PROXY_SCHEMES)} "
                          f"(socks5h preferred), got {parts.scheme or 'none'!r}", PROXY_FAILED)
    if not parts.hostname or port is None:
        raise ConfigError("PROXY_URL", f"needs a host and a port ({redact_url(value)})", PROXY_FAILED)
    return value


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(environ, name).lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"must be true/false/1/0, got {value!r}")


def _seconds(environ: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    raw = _get(environ, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= maximum:
        raise ConfigError(name, f"must be > 0 and <= {maximum:g} seconds, got {raw}")
    return value


def _host_port(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, f"must be host:port, got {value!r}")
    return value


def _profile(environ: Mapping[str, str]) -> dict[str, Any]:
    raw = _get(environ, "PROFILE")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError("PROFILE", "is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError("PROFILE", "must be a JSON object")
    return value


@dataclass(frozen=True)
class ReportTarget:
    """Enough configuration to report an ERROR even when the rest is unusable."""

    session_id: str
    webhook_url: str
    webhook_secret: str = field(repr=False)
    orchestrator_url: str = ""


def report_target(environ: Mapping[str, str]) -> ReportTarget | None:
    """Where to report a configuration error, or None when even that is impossible."""
    session_id = _get(environ, "SESSION_ID")
    secret = _get(environ, "WEBHOOK_SECRET")
    if not SESSION_ID_RE.fullmatch(session_id) or not secret:
        return None
    try:
        webhook_url = _http_url("WEBHOOK_URL", _get(environ, "WEBHOOK_URL"))
    except ConfigError:
        return None
    return ReportTarget(session_id, webhook_url, secret)


@dataclass(frozen=True)
class WorkerConfig:
    session_id: str
    webhook_url: str
    webhook_secret: str = field(repr=False)
    proxy_url: str = field(default="", repr=False)
    phone: str = ""
    keep_alive: bool = True
    transport: str = "neonize"
    sessions_dir: str = "/app/sessions"
    orchestrator_url: str = ""
    profile: dict[str, Any] = field(default_factory=dict)
    sim_wire: str = ""
    ping_interval: float = 15.0
    claim_wait: float = 25.0
    session_store: str = field(default=session_store.FILE, repr=False)  # `file` or a postgres:// URL
    device_jid: str = ""

    @property
    def session_dir(self) -> str:
        """The session's own data directory."""
        return os.path.join(self.sessions_dir, self.session_id)

    @property
    def journal_path(self) -> str:
        return os.path.join(self.session_dir, "outbox-journal.jsonl")

    def describe(self) -> str:
        """One log line about this configuration, with credentials redacted."""
        return (f"session={self.session_id} transport={self.transport} phone={self.phone or '-'} "
                f"proxy={redact_url(self.proxy_url) or '-'} orchestrator={self.orchestrator_url} "
                f"dir={self.session_dir} ping={self.ping_interval:g}s claim_wait={self.claim_wait:g}s "
                f"store={session_store.redact(self.session_store)} device={self.device_jid or '-'}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerConfig:
        """Parse and check the environment; raises ConfigError naming the first bad variable."""
        session_id = _get(environ, "SESSION_ID")
        if not session_id:
            raise ConfigError("SESSION_ID", "is required")
        if not SESSION_ID_RE.fullmatch(session_id):
            raise ConfigError("SESSION_ID", "must be 1-64 characters of A-Z a-z 0-9 _ -")
        webhook_url = _get(environ, "WEBHOOK_URL")
        if not webhook_url:
            raise ConfigError("WEBHOOK_URL", "is required")
        _http_url("WEBHOOK_URL", webhook_url)
        secret = _get(environ, "WEBHOOK_SECRET")
        if not secret:
            raise ConfigError("WEBHOOK_SECRET", "is required")

        transport = _get(environ, "TRANSPORT").lower() or "neonize"
        if transport not in KNOWN_TRANSPORTS:
            raise ConfigError("TRANSPORT", f"must be one of {', '.join(KNOWN_TRANSPORTS)}, got {transport!r}")
        phone = _get(environ, "PHONE").lstrip("+")
        if phone and not _PHONE.fullmatch(phone):
            raise ConfigError("PHONE", "must be E.164 digits (6-15 digits, no spaces)")
        if transport == "sim" and not phone:
            raise ConfigError("PHONE", "is required with TRANSPORT=sim (the simulator pairs by it)")
        sim_wire = _get(environ, "SIM_WIRE")
        if sim_wire:
            _host_port("SIM_WIRE", sim_wire)
        elif transport == "sim":
            raise ConfigError("SIM_WIRE", "is required with TRANSPORT=sim (host:port of the simulator wire)")

        orchestrator_url = _get(environ, "ORCHESTRATOR_URL")
        if orchestrator_url:
            _http_url("ORCHESTRATOR_URL", orchestrator_url)
        else:
            parts = urlsplit(webhook_url)
            orchestrator_url = f"{parts.scheme}://{parts.netloc}"
        sessions_dir = _get(environ, "SESSIONS_DIR") or "/app/sessions"
        try:
            store = session_store.parse(_get(environ, "SESSION_STORE"))
        except ValueError as exc:
            raise ConfigError("SESSION_STORE", str(exc)) from None
        device_jid = _get(environ, "DEVICE_JID")
        if device_jid and session_store.parse_jid(device_jid) is None:
            raise ConfigError("DEVICE_JID", "must be a device JID like 491700000001:7@s.whatsapp.net")

        return cls(
            session_id=session_id,
            webhook_url=webhook_url,
            webhook_secret=secret,
            proxy_url=_proxy_url(environ),
            phone=phone,
            keep_alive=_bool(environ, "ENABLE_KEEP_ALIVE", True),
            transport=transport,
            sessions_dir=sessions_dir,
            orchestrator_url=orchestrator_url.rstrip("/"),
            profile=_profile(environ),
            sim_wire=sim_wire,
            ping_interval=_seconds(environ, "PING_INTERVAL", 15.0, MAX_PING_INTERVAL),
            claim_wait=_seconds(environ, "CLAIM_WAIT", 25.0, MAX_CLAIM_WAIT),
            session_store=store,
            device_jid=device_jid,
        )
