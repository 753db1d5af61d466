"""A small client for the public API, used by integration and e2e tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import requests
from werkzeug.serving import make_server


@dataclass
class ApiClient:
    base_url: str
    api_key: str | None = None
    http: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, key: str | None = "default", **kwargs):
        headers = dict(kwargs.pop("headers", {}) or {})
        use = self.api_key if key == "default" else key
        if use:
            headers.setdefault("X-API-Key", use)
        return self.http.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def send(self, to: str, text: str, **extra):
        return self.post("/api/send", json={"to": to, "text": text, **extra})


class ThreadedGateway:
    """The gateway app served over real HTTP by a threaded WSGI server on 127.0.0.1."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> ThreadedGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(10)
