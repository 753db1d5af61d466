"""A raw client of the simulator's wire protocol, connecting through a SOCKS5 proxy (for tests)."""

from __future__ import annotations

import json
import time
from typing import Any

from python_socks.sync import Proxy

TIMEOUT = 20.0  # generous: the machine is shared and loaded


class WireClient:
    def __init__(self, proxy_url: str, wire: str) -> None:
        host, port = wire.rsplit(":", 1)
        proxy = Proxy.from_url(proxy_url.replace("socks5h://", "socks5://"), rdns=True)
        self.sock = proxy.connect(host, int(port), timeout=TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.seen: list[dict[str, Any]] = []

    def request(self, **fields: Any) -> None:
        self.sock.sendall(json.dumps(fields).encode() + b"\n")

    def hello(self, phone: str, session: str = "s1", creds: str | None = None,
              device: dict | None = None) -> None:
        self.request(op="hello", phone=phone, session=session, device=device or {"os": "Linux"},
                     creds=creds)

    def next_event(self) -> dict[str, Any] | None:
        """The next event, or None at end of stream."""
        line = self.file.readline()
        if not line:
            return None
        event = json.loads(line)
        self.seen.append(event)
        return event

    def expect(self, ev: str, **match: Any) -> dict[str, Any]:
        """Read until an event of kind `ev` (whose fields include `match`) arrives."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            event = self.next_event()
            if event is None:
                raise AssertionError(f"stream ended while waiting for {ev}; seen {self.seen}")
            if event.get("ev") == ev and all(event.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"no {ev} event in time; seen {self.seen}")

    def expect_closed(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.next_event() is None:
                    return
            except ConnectionResetError:
                return
        raise AssertionError("connection still open")

    def close(self) -> None:
        self.file.close()
        self.sock.close()
