"""A real HTTP endpoint on 127.0.0.1 standing in for a client's webhook receiver in tests.

It records every POST (headers and exact body), answers with a configurable status after an
optional delay (or per event, through `rule`), and can go down (port closed: connection refused)
and come back on the same port.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import Message

from tests.support.local_http import LocalHttpServer, Reply, free_port
from waorch.core import signing


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    def verifies(self, secret: str, max_skew: float = 300) -> bool:
        return signing.verify(secret, self.headers.get("X-Waorch-Timestamp"),
                              self.headers.get("X-Waorch-Signature"), self.body, max_skew)


class WebhookReceiver(LocalHttpServer):
    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        super().__init__(port or free_port(), tls)
        self.host = host  # the name in the URL (the server always listens on 127.0.0.1)
        self.status = 200
        self.delay = 0.0
        # per-event answer: event -> (status, delay) to answer that event differently, or None
        self.rule = None
        self.deliveries: list[Delivery] = []
        self.attempts = 0  # requests seen, whatever was answered
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hooks/waorch"

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        with self._changed:
            self.attempts += 1
            self._changed.notify_all()
        status, delay = self.status, self.delay
        if self.rule is not None:
            with contextlib.suppress(ValueError):
                status, delay = self.rule(json.loads(body)) or (status, delay)
        if delay:
            time.sleep(delay)
        if 200 <= status < 300:
            with self._changed:
                self.deliveries.append(Delivery(path, dict(headers), body))
                self._changed.notify_all()
        return status, {}, b""

    def events(self) -> list[dict]:
        with self._changed:
            return [d.event for d in self.deliveries]

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "deliveries") -> None:
        """Wait until predicate(receiver) holds (checked on every request), or fail."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got {len(self.deliveries)} "
                                         f"deliveries of {self.attempts} attempts")
                self._changed.wait(min(remaining, 0.5))
