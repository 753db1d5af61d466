"""A real HTTP endpoint on 127.0.0.1 standing in for a client's webhook receiver in tests.

It records every POST (headers and exact body), answers with a configurable status after an
optional delay, and can go down (port closed: connection refused) and come back on the same port.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from waorch import signing


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.tls = tls
        self.host = host  # the name in the URL (the server always listens on 127.0.0.1)
        self.status = 200
        self.delay = 0.0
        self.deliveries: list[Delivery] = []
        self.attempts = 0  # requests seen, whatever was answered
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hooks/waorch"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.attempts += 1
                    receiver._changed.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if 200 <= status < 300:
                    with receiver._changed:
                        receiver.deliveries.append(Delivery(self.path, dict(self.headers), body))
                        receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: deliveries now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

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

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
