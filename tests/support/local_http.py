"""A threaded HTTP server on 127.0.0.1 for test doubles: subclasses say how to answer a request."""

from __future__ import annotations

import socket
import ssl
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

Reply = tuple[int, dict[str, str], bytes]  # status, headers, body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    def serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, data = self.server.owner.answer(self.command, self.path, self.headers, body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class LocalHttpServer:
    """Serves `methods` with `answer` in a daemon thread; port 0 takes a free one at start."""

    methods: tuple[str, ...] = ("POST",)  # others get http.server's 501

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        """(status, headers, body) to send back; runs on the request's own thread."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {f"do_{method}": _Handler.serve for method in self.methods})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.owner = self
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: requests now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
