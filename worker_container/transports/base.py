"""The interface every transport implements, and the events it reports.

A transport owns the connection to WhatsApp (or the simulator) for one account. It never
chooses a proxy: it connects through `config.proxy_url` or fails with a PROXY_FAILED error.
It reports what happens through `emit(event_type, data)`, called from any thread:

| event           | data                                                                  |
|-----------------|-----------------------------------------------------------------------|
| QR              | {"qr": "<payload to render as a QR code>"}                            |
| PAIR_CODE       | {"code": "ABCD-EFGH"} (pairing-code login)                             |
| CONNECTED       | {"jid": "<own jid or phone>"}                                          |
| ERROR           | {"code": PROXY_FAILED|LOGGED_OUT|BANNED|CONNECTION_LOST|..., "detail"} |
| MESSAGE_STATUS  | {"wa_id", "status": "delivered"|"read", "at": unix time}              |
| INBOUND         | {"from", "text", "wa_id", "at", "media": {...} | null}                |
| RESTRICTED      | {"reason", "until": unix time | null}                                 |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Emit = Callable[[str, dict[str, Any]], None]

# ERROR codes a transport may report.
PROXY_FAILED = "PROXY_FAILED"
LOGGED_OUT = "LOGGED_OUT"
BANNED = "BANNED"
CONNECTION_LOST = "CONNECTION_LOST"
CONFIG_INVALID = "CONFIG_INVALID"
TRANSPORT_UNAVAILABLE = "TRANSPORT_UNAVAILABLE"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"


@dataclass(frozen=True)
class TransportConfig:
    session_id: str
    phone: str
    proxy_url: str
    session_dir: str  # the session's own data volume
    profile: dict[str, Any] = field(default_factory=dict)  # linked-device profile
    keep_alive: bool = True
    sim_wire: str = ""  # host:port of the simulator's wire (sim transport only)
    store: str = field(default="file", repr=False)  # `file` or a postgres:// URL (SESSION_STORE)
    device_jid: str = ""  # the registry's device JID of this session (DEVICE_JID), "" if none


@dataclass(frozen=True)
class SendResult:
    wa_id: str
    timestamp: float


class SendError(Exception):
    """A send that did not happen. `retryable` tells the orchestrator whether to try again."""

    def __init__(self, code: str, detail: str = "", retryable: bool = True,
                 restricted_until: float | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.restricted_until = restricted_until


class Transport(ABC):
    name: str = "abstract"

    def __init__(self, config: TransportConfig, emit: Emit) -> None:
        self.config = config
        self.emit = emit

    @abstractmethod
    def start(self) -> None:
        """Connect (through the proxy) and log in or start pairing; returns without blocking."""

    @abstractmethod
    def connected(self) -> bool:
        """True while logged in and able to send."""

    @abstractmethod
    def send(self, to: str, text: str, media: dict[str, Any] | None = None,
             message_id: str | None = None) -> SendResult:
        """Send one message to phone `to` (E.164 digits); raises SendError when it did not go."""

    @abstractmethod
    def stop(self) -> None:
        """Disconnect cleanly; safe to call twice."""

    def counters(self) -> dict[str, Any]:
        """Transport-specific numbers added to PING events."""
        return {}
