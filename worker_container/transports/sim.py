"""The `sim` transport: talks to the simulator's wire (waorch/simulator/README.md) through the proxy.

One connection thread owns the socket: it connects through `config.proxy_url` (remote DNS),
says hello, turns wire events into `emit` calls and reconnects with backoff. `send` may be
called from any thread and waits for the matching `send_result`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from waorch.core.session_store import StoreUnavailable
from worker_container.store import SIM_CREDS_FILE, SimCreds
from worker_container.transports.base import (
    BANNED,
    CONNECTION_LOST,
    LOGGED_OUT,
    PROXY_FAILED,
    STORE_UNAVAILABLE,
    SendError,
    SendResult,
    Transport,
    TransportConfig,
)

log = logging.getLogger(__name__)

CREDS_FILE = SIM_CREDS_FILE
STREAM_REPLACED = "STREAM_REPLACED"
PROTOCOL_ERROR = "PROTOCOL_ERROR"
MAX_LINE = 1 << 20
_SEPARATORS = re.compile(r"[\s\-()]")


class _Terminal(Exception):
    """The network ended this account's session for good (banned, replaced): stop reconnecting."""


@dataclass
class _PendingSend:
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None


def proxy_for(url: str) -> Proxy:
    """python-socks Proxy for a socks5:// or socks5h:// URL, always resolving names at the proxy."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("socks5", "socks5h") or not parts.hostname:
        raise ValueError("the sim transport needs a socks5:// or socks5h:// proxy URL")
    return Proxy.from_url(urlunsplit(parts._replace(scheme="socks5")), rdns=True)


def wire_address(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SIM_WIRE must be host:port, got {value!r}")
    return host, int(port)


class SimTransport(Transport):
    name = "sim"

    # Instance-tunable (tests shorten them); seconds.
    connect_timeout = 15.0
    send_timeout = 30.0
    backoff_initial = 1.0
    backoff_max = 30.0
    keepalive_interval = 10.0
    keepalive_misses = 3  # silent intervals before the connection is declared dead

    def __init__(self, config: TransportConfig, emit) -> None:
        super().__init__(config, emit)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._connected = False
        self._pending: dict[str, _PendingSend] = {}
        self._refs = itertools.count(1)
        self._last_restriction: float | None = None
        self._numbers = {"reconnects": 0, "proxy_failures": 0, "sends_ok": 0, "sends_failed": 0}
        self._creds = SimCreds(config.store, config.session_id, config.phone, config.session_dir)

    # -- Transport interface ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if not self.config.phone:
            raise ValueError("the sim transport needs the account's phone number (PHONE)")
        self._proxy = proxy_for(self.config.proxy_url)  # ValueError: a bad URL is a config error
        self._wire = wire_address(self.config.sim_wire)
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.config.session_id}",
                                        daemon=True)
        self._thread.start()

    def connected(self) -> bool:
        return self._connected

    def send(self, to: str, text: str, media: dict[str, Any] | None = None,
             message_id: str | None = None) -> SendResult:
        digits = _SEPARATORS.sub("", str(to or "")).removeprefix("+")
        if not digits.isdigit() or not 7 <= len(digits) <= 15:
            raise SendError("INVALID_RECIPIENT", f"recipient {to!r} is not a phone number", retryable=False)
        if not self._connected:
            raise SendError("NOT_CONNECTED", "not logged in to the simulator", retryable=True)
        ref = str(next(self._refs))
        pending = _PendingSend()
        with self._lock:
            self._pending[ref] = pending
        try:
            # The simulator dedupes on "id", so a resend after a lost answer cannot send twice.
            self._write({"op": "send", "ref": ref, "to": digits, "text": text, "media": media,
                         "id": message_id})
            if not pending.done.wait(self.send_timeout):
                raise SendError("TIMEOUT", "no answer from the network; safe to retry (deduplicated by id)",
                                retryable=True)
        except OSError:
            raise SendError("NOT_CONNECTED", "connection lost before the send went out",
                            retryable=True) from None
        finally:
            with self._lock:
                self._pending.pop(ref, None)
        result = pending.result or {}
        if result.get("ok"):
            self._numbers["sends_ok"] += 1
            return SendResult(wa_id=str(result["wa_id"]), timestamp=float(result.get("ts") or time.time()))
        self._numbers["sends_failed"] += 1
        raise self._send_error(result)

    def stop(self) -> None:
        self._stopping.set()
        self._drop_socket()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.connect_timeout + 5)
        self._fail_pending("NOT_CONNECTED", "transport stopped")

    def counters(self) -> dict[str, Any]:
        return dict(self._numbers)

    # -- connection thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial
        first = True
        while not self._stopping.is_set():
            if not first:
                self._numbers["reconnects"] += 1
            first = False
            try:
                sock = self._open()
            except (ProxyConnectionError, ProxyTimeoutError, ProxyError, OSError) as exc:
                self._numbers["proxy_failures"] += 1
                self._emit("ERROR", {"code": PROXY_FAILED, "detail": _proxy_detail(exc)})
                backoff = self._pause(backoff)
                continue
            try:
                outcome = self._session(sock)
            except _Terminal:
                return
            finally:
                self._connected = False
                self._drop_socket()
                self._fail_pending(CONNECTION_LOST, "connection to the network lost; safe to retry")
            if outcome != "failed":
                backoff = self.backoff_initial
            if outcome != "again" and not self._stopping.is_set():
                backoff = self._pause(backoff)

    def _pause(self, backoff: float) -> float:
        self._stopping.wait(backoff * random.uniform(0.8, 1.2))
        return min(backoff * 2, self.backoff_max)

    def _open(self) -> socket.socket:
        host, port = self._wire
        sock = self._proxy.connect(host, port, timeout=self.connect_timeout)
        sock.settimeout(self.keepalive_interval if self.config.keep_alive else None)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                raise OSError("stopping")
            self._sock = sock
        return sock

    def _session(self, sock: socket.socket) -> str:
        """Serve one connection: "again" (reconnect at once), "lost" (after login) or "failed"."""
        try:
            creds = self._load_creds()
        except StoreUnavailable as exc:
            # never pair again for a store outage: that would cost a scan; wait and retry
            self._emit("ERROR", {"code": STORE_UNAVAILABLE, "detail": str(exc)})
            return "failed"
        self._write({"op": "hello", "phone": self.config.phone, "session": self.config.session_id,
                     "device": self.config.profile, "creds": creds})
        buffer = bytearray()
        silent = 0
        was_connected = False
        while not self._stopping.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                silent += 1
                if silent >= self.keepalive_misses:
                    self._emit("ERROR", {"code": CONNECTION_LOST, "detail": "no answer to keep-alive pings"})
                    return "lost" if was_connected else "failed"
                with contextlib.suppress(OSError):
                    self._write({"op": "ping"})
                continue
            except OSError as exc:
                chunk = b""
                log.debug("wire read failed: %s", exc)
            if not chunk:
                break
            silent = 0
            buffer.extend(chunk)
            if len(buffer) > MAX_LINE and b"\n" not in buffer:
                log.warning("oversized line from the simulator; reconnecting")
                break
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer = bytearray(rest)
                outcome = self._on_event(line)
                if outcome == "connected":
                    was_connected = True
                elif outcome == "again":
                    return "again"
        if was_connected and not self._stopping.is_set():
            self._emit("ERROR", {"code": CONNECTION_LOST, "detail": "the network closed the connection"})
        return "lost" if was_connected else "failed"

    def _on_event(self, line: bytes) -> str | None:
        """Handle one wire event; "connected", "again" (reconnect now) or None."""
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("unreadable line from the simulator")
            return None
        kind = event.get("ev") if isinstance(event, dict) else None
        if kind == "send_result":
            with self._lock:
                pending = self._pending.get(str(event.get("ref")))
            if pending is not None:
                pending.result = event
                pending.done.set()
        elif kind == "qr":
            self._emit("QR", {"qr": event.get("code")})
        elif kind == "paired":
            self._save_creds(str(event.get("creds") or ""))
            return "again"
        elif kind == "connected":
            self._connected = True
            self._emit("CONNECTED", {"jid": event.get("jid") or self.config.phone})
            return "connected"
        elif kind == "receipt":
            self._emit("MESSAGE_STATUS", {"wa_id": event.get("wa_id"), "status": event.get("status"),
                                          "at": event.get("at")})
        elif kind == "message":
            self._emit("INBOUND", {"from": event.get("from"), "text": event.get("text") or "",
                                   "wa_id": event.get("wa_id"), "at": event.get("at"),
                                   "media": event.get("media")})
        elif kind == "restricted":
            self._restricted(event.get("reason"), event.get("until"))
        elif kind == "logged_out":
            self._connected = False
            self._delete_creds()
            self._emit("ERROR", {"code": LOGGED_OUT, "detail": event.get("reason") or "logged out"})
            return "again"  # pair again: the next hello has no creds, so a new QR comes
        elif kind == "banned":
            self._connected = False
            self._emit("ERROR", {"code": BANNED, "detail": event.get("reason") or "banned"})
            raise _Terminal
        elif kind == "replaced":
            self._connected = False
            self._emit("ERROR", {"code": STREAM_REPLACED,
                                 "detail": "another connection logged in as this account"})
            raise _Terminal
        elif kind == "error":
            # Only a bug on our side produces these; say so rather than wait silently.
            self._emit("ERROR", {"code": PROTOCOL_ERROR,
                                 "detail": f"{event.get('code')}: {event.get('detail')}"})
        return None

    # -- pieces ----------------------------------------------------------------------------

    def _write(self, request: dict[str, Any]) -> None:
        data = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        with self._write_lock:
            sock = self._sock
            if sock is None:
                raise OSError("not connected")
            sock.sendall(data)

    def _send_error(self, result: dict[str, Any]) -> SendError:
        code, detail = str(result.get("code") or "SEND_FAILED"), str(result.get("detail") or "")
        retryable = bool(result.get("retryable"))
        if code == "463":
            until = result.get("restricted_until")
            self._restricted(detail, until)
            return SendError("RESTRICTED", f"send_error_463: {detail}", retryable=retryable,
                             restricted_until=float(until) if until is not None else None)
        return SendError(code, detail, retryable=retryable)

    def _restricted(self, reason: Any, until: Any) -> None:
        if until is not None and until == self._last_restriction:
            return  # the same restriction, already reported
        self._last_restriction = until
        self._emit("RESTRICTED", {"reason": reason, "until": until})

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        try:
            self.emit(event_type, data)
        except Exception:  # the connection thread must survive a broken callback
            log.exception("emit(%s) failed", event_type)

    def _drop_socket(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _fail_pending(self, code: str, detail: str) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for item in pending:
            if not item.done.is_set():
                item.result = {"ok": False, "code": code, "detail": detail, "retryable": True}
                item.done.set()

    def _load_creds(self) -> str | None:
        return self._creds.load()

    def _save_creds(self, creds: str) -> None:
        try:
            self._creds.save(creds)
        except StoreUnavailable as exc:
            # the pairing is lost with them: the next hello pairs again (a new QR)
            self._emit("ERROR", {"code": STORE_UNAVAILABLE, "detail": f"credentials not saved: {exc}"})

    def _delete_creds(self) -> None:
        try:
            self._creds.delete()
        except StoreUnavailable as exc:
            log.warning("credentials not deleted: %s", exc)


def _proxy_detail(exc: BaseException) -> str:
    # python-socks messages name the proxy host and port, never its credentials.
    if isinstance(exc, ProxyError) and exc.error_code is not None:
        return f"the proxy could not reach the network (SOCKS reply {exc.error_code}: {exc})"
    return f"{type(exc).__name__}: {exc}"
