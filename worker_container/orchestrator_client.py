"""The worker's side of the worker ↔ orchestrator HTTP contract (docs/ARCHITECTURE.md).

Events go through a bounded in-memory queue drained by one sender thread, so transport threads
never wait on HTTP; a failed event is retried with backoff. Outbox calls (claim, ack, nack) are
made on the caller's thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from waorch.core.signing import sign_headers

log = logging.getLogger(__name__)

ACCEPTED, REFUSED, GAVE_UP = "accepted", "refused", "gave_up"
EVENT_TIMEOUT = 10.0
OUTBOX_TIMEOUT = 10.0
MAX_BACKOFF = 15.0
MAX_DETAIL = 2000  # the gateway refuses longer NACK details


class ClientConfig(Protocol):
    session_id: str
    webhook_url: str
    webhook_secret: str
    orchestrator_url: str


class OrchestratorUnavailable(Exception):
    """The orchestrator could not be reached or answered with an error worth retrying."""


class Refused(Exception):
    """The orchestrator refused the request (4xx other than 429): retrying will not help."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


def _retry_later(status: int) -> bool:
    return status == 429 or status >= 500


class OrchestratorClient:
    """Signed requests of one session to the orchestrator."""

    def __init__(self, config: ClientConfig, queue_size: int = 1000) -> None:
        self.session_id = config.session_id
        self.webhook_url = config.webhook_url
        self._secret = config.webhook_secret
        base = config.orchestrator_url
        if not base:
            parts = urlsplit(config.webhook_url)
            base = f"{parts.scheme}://{parts.netloc}"
        self._outbox_url = f"{base.rstrip('/')}/api/worker/sessions/{quote(self.session_id)}/outbox"
        self._local = threading.local()
        self._queue: deque[dict[str, Any]] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._in_flight = False
        self._closing = False
        self._sender: threading.Thread | None = None
        self.events_sent = 0
        self.events_dropped = 0

    # ----- HTTP ----------------------------------------------------------------------------

    def _http(self) -> requests.Session:
        # One Session per thread: requests.Session is not documented as thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # HTTP(S)_PROXY is for other traffic; never route ours through it
        return session

    def post(self, url: str, payload: dict[str, Any], timeout: float) -> requests.Response:
        """POST `payload` + session_id + a fresh nonce, signed; raises OrchestratorUnavailable."""
        body = {"session_id": self.session_id, "nonce": uuid.uuid4().hex, **payload}
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **sign_headers(self._secret, raw)}
        try:
            return self._http().post(url, data=raw, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise OrchestratorUnavailable(f"{type(exc).__name__} on {url}") from None

    def _checked(self, url: str, payload: dict[str, Any], timeout: float) -> requests.Response:
        response = self.post(url, payload, timeout)
        if _retry_later(response.status_code):
            raise OrchestratorUnavailable(f"HTTP {response.status_code} from {url}")
        if response.status_code >= 400:
            raise Refused(response.status_code, response.text)
        return response

    # ----- events --------------------------------------------------------------------------

    def event(self, event_type: str, data: dict[str, Any] | None = None) -> None:
        """Queue an event for delivery; never blocks on the network."""
        item = {"event": event_type, "at": time.time(), "data": data or {}}
        with self._cond:
            if len(self._queue) >= self._queue_size:
                self._drop_one()
            self._queue.append(item)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_events, name="event-sender", daemon=True)
                self._sender.start()
            self._cond.notify_all()

    def _drop_one(self) -> None:
        # A stale PING is worth less than anything else; otherwise drop the oldest event.
        victim = next((i for i in self._queue if i["event"] == "PING"), self._queue[0])
        self._queue.remove(victim)
        self.events_dropped += 1
        log.warning("event queue full: dropped a %s event", victim["event"])

    def _send_events(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue[0]
                self._in_flight = True
            done = self._deliver(item)
            with self._cond:
                self._in_flight = False
                if done:
                    if self._queue and self._queue[0] is item:
                        self._queue.popleft()
                    backoff = 0.5
                self._cond.notify_all()
                if not done:
                    deadline = time.monotonic() + backoff
                    while not self._closing and (remaining := deadline - time.monotonic()) > 0:
                        self._cond.wait(timeout=remaining)
                    backoff = min(backoff * 2, MAX_BACKOFF)

    def _deliver(self, item: dict[str, Any]) -> bool:
        """Post one event; True when finished with it (delivered or refused), False to retry."""
        try:
            self._checked(self.webhook_url, item, EVENT_TIMEOUT)
        except OrchestratorUnavailable as exc:
            log.warning("%s event not delivered yet (%s); will retry", item["event"], exc)
            return False
        except Refused as exc:
            self.events_dropped += 1
            log.error("%s event refused by the orchestrator (%s); dropped", item["event"], exc)
            return True
        self.events_sent += 1
        return True

    def pending_events(self) -> int:
        with self._cond:
            return len(self._queue)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event is delivered (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.2))
        return True

    def close(self, timeout: float = 3.0) -> bool:
        """Deliver what is queued within `timeout`, then stop the sender; False if events remain."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not flushed:
            log.warning("%d event(s) not delivered before exit", self.pending_events())
        return flushed

    # ----- outbox --------------------------------------------------------------------------

    def claim(self, wait: float) -> dict[str, Any] | None:
        """Long-poll for the next due message; None when nothing became due within `wait`.

        Raises OrchestratorUnavailable or Refused; the caller backs off.
        """
        response = self._checked(f"{self._outbox_url}/claim", {"wait": wait}, timeout=wait + OUTBOX_TIMEOUT)
        if response.status_code == 204 or not response.content:
            return None
        try:
            message = response.json()
        except ValueError:
            raise OrchestratorUnavailable("claim answered with a body that is not JSON") from None
        if not isinstance(message, dict) or not message.get("id") or not message.get("lease_token"):
            raise OrchestratorUnavailable("claim answered without id/lease_token")
        return message

    def ack(self, msg_id: str, lease_token: str, wa_id: str, sent_at: float | None,
            give_up: Callable[[], bool] = lambda: False) -> str:
        """Report a sent message; retried until ACCEPTED or REFUSED, or GAVE_UP once give_up()."""
        payload = {"lease_token": lease_token, "wa_id": wa_id, "sent_at": sent_at}
        return self._until_done(f"{self._outbox_url}/{quote(msg_id)}/ack", payload, give_up)

    def nack(self, msg_id: str, lease_token: str, reason: str, retryable: bool, detail: str = "",
             give_up: Callable[[], bool] = lambda: False) -> str:
        """Report a message that was not sent; same retry rules as ack()."""
        payload = {"lease_token": lease_token, "reason": reason[:64], "retryable": retryable,
                   "detail": detail[:MAX_DETAIL]}
        return self._until_done(f"{self._outbox_url}/{quote(msg_id)}/nack", payload, give_up)

    def _until_done(self, url: str, payload: dict[str, Any], give_up: Callable[[], bool]) -> str:
        backoff = 0.5
        while True:
            try:
                self._checked(url, payload, OUTBOX_TIMEOUT)
                return ACCEPTED
            except Refused as exc:
                log.error("orchestrator refused %s: %s", url.rsplit("/", 1)[-1], exc)
                return REFUSED
            except OrchestratorUnavailable as exc:
                log.warning("%s failed (%s); retrying in %.1fs", url.rsplit("/", 1)[-1], exc, backoff)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline:
                if give_up():
                    return GAVE_UP
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if give_up():
                return GAVE_UP
            backoff = min(backoff * 2, MAX_BACKOFF)
