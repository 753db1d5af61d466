"""The worker's main loop: claim → journal → send → journal → ACK, with PINGs and a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from worker_container import healthcheck
from worker_container import journal as jr
from worker_container.config import ConfigError, WorkerConfig, report_target
from worker_container.logs import configure_logging
from worker_container.orchestrator_client import (
    ACCEPTED,
    GAVE_UP,
    OrchestratorClient,
    OrchestratorUnavailable,
    Refused,
)
from worker_container.transports import transport_class
from worker_container.transports.base import (
    CONFIG_INVALID,
    TRANSPORT_UNAVAILABLE,
    SendError,
    Transport,
    TransportConfig,
)

log = logging.getLogger(__name__)

# Budgets after a stop request, measured from the request; together they keep the exit under ~10 s.
CLAIM_GRACE = 3.0  # wait for a claim already in flight (its message is then NACKed)
REPORT_GRACE = 5.0  # keep retrying the ACK/NACK of the message in hand
TRANSPORT_STOP_TIMEOUT = 2.0
EXIT_BY = 9.5  # the STOPPING event gets what is left of this
CLAIM_ERROR_BACKOFF = (1.0, 30.0)

NEVER_SENT_REASON = "session_lost"
KEPT_AFTER_STOPPING = ("MESSAGE_STATUS", "INBOUND", "RESTRICTED")  # facts, not connection noise


def _in_thread(fn: Callable[[], Any], name: str) -> tuple[threading.Event, dict[str, Any]]:
    """Run fn on a daemon thread (one that cannot hold up the exit); returns (done, outcome)."""
    done, outcome = threading.Event(), {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done, outcome


def send_error_report(exc: SendError) -> tuple[str, str]:
    """(reason, detail) of the NACK for a failed send; RESTRICTED limits travel in the detail."""
    code = exc.code or "SEND_ERROR"
    reason = "invalid_recipient" if code.lower() in ("invalid_recipient", "not_on_whatsapp") else "send_error"
    detail = f"{code}: {exc.detail}" if exc.detail else code
    if exc.restricted_until is not None:
        detail += f" until={int(exc.restricted_until)}"
    return reason, detail


class Worker:
    """Serves one session until asked to stop."""

    def __init__(self, config: WorkerConfig, client: OrchestratorClient | None = None) -> None:
        self.config = config
        self.client = client or OrchestratorClient(config)
        self.transport: Transport | None = None
        self.journal: jr.Journal | None = None
        self.counters = {"sent": 0, "failed": 0, "claimed": 0}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._stop_reason = ""
        self._wake = threading.Event()  # set on stop and on CONNECTED
        self._pings_done = threading.Event()
        self._ping_lock = threading.Lock()  # orders events around STOPPING
        self._stopping_sent = False
        self._claim_backoff = CLAIM_ERROR_BACKOFF[0]

    # ----- outside world -------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self._stop.is_set():
            log.info("stop already in progress (%s)", reason)
            return
        log.info("stopping: %s", reason)
        self._stop_at = time.monotonic()
        self._stop_reason = reason
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """The transport's event callback (any thread): forward without blocking."""
        with self._ping_lock:
            if self._stopping_sent and event_type not in KEPT_AFTER_STOPPING:
                # Disconnects caused by our own stop are noise once STOPPING has been said.
                log.debug("%s after STOPPING not forwarded", event_type)
                return
            self.client.event(event_type, data)
        if event_type == "CONNECTED":
            self._wake.set()
        if event_type == "ERROR":
            log.warning("transport error %s: %s", data.get("code"), data.get("detail"))

    def connected(self) -> bool:
        try:
            return bool(self.transport and self.transport.connected())
        except Exception:  # a broken transport is a disconnected one
            log.exception("transport.connected() failed")
            return False

    def ping_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.transport is not None:
            try:
                data.update(self.transport.counters())
            except Exception:
                log.exception("transport.counters() failed")
        data.update(self.counters, connected=self.connected(),
                    uptime=int(time.monotonic() - self._started), pid=os.getpid())
        return data

    def _ping_loop(self) -> None:
        while True:
            data = self.ping_data()
            with self._ping_lock:
                if self._pings_done.is_set():
                    return
                self.client.event("PING", data)
            try:
                # the container healthcheck reads this file (worker_container/healthcheck.py)
                healthcheck.beat(self.config.session_dir, {"connected": data.get("connected")})
            except OSError as exc:
                log.warning("heartbeat not written: %s", exc.strerror)
            if self._pings_done.wait(self.config.ping_interval):
                return

    def _give_up(self) -> bool:
        return self.stopping and time.monotonic() > self._stop_at + REPORT_GRACE

    def _error(self, code: str, detail: str) -> None:
        log.error("%s: %s", code, detail)
        self.client.event("ERROR", {"code": code, "detail": detail})

    # ----- run -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        log.info("starting: %s", self.config.describe())
        try:
            self.journal = jr.Journal(self.config.journal_path)
        except OSError as exc:
            self._error(CONFIG_INVALID, f"SESSIONS_DIR: cannot use {self.config.session_dir}: {exc.strerror}")
            self.client.close(timeout=5.0)
            return 2
        threading.Thread(target=self._ping_loop, name="ping", daemon=True).start()
        try:
            self._reconcile()
            if self.stopping:
                return self._shutdown()
            if not self._start_transport():
                self._pings_done.set()
                self.client.close(timeout=5.0)
                return 1
            self._loop()
            return self._shutdown()
        finally:
            self.journal.close()

    def _start_transport(self) -> bool:
        c = self.config
        try:
            cls = transport_class(c.transport)
        except Exception as exc:  # noqa: BLE001 - any failure to load it is reported the same way
            self._error(TRANSPORT_UNAVAILABLE, f"transport {c.transport!r} cannot be loaded: "
                                               f"{type(exc).__name__}: {exc}")
            return False
        tconfig = TransportConfig(session_id=c.session_id, phone=c.phone, proxy_url=c.proxy_url,
                                  session_dir=c.session_dir, profile=c.profile, keep_alive=c.keep_alive,
                                  sim_wire=c.sim_wire, store=c.session_store, device_jid=c.device_jid)
        try:
            self.transport = cls(tconfig, self.emit)
            self.transport.start()
        except Exception as exc:
            if getattr(exc, "code", None):
                return False  # the transport already reported its precise ERROR
            # The exception's text may quote the proxy URL with its password: report only its type.
            self._error(TRANSPORT_UNAVAILABLE,
                        f"transport {c.transport!r} failed to start: {type(exc).__name__}")
            log.debug("transport start failure", exc_info=True)
            return False
        return True

    def _reconcile(self) -> None:
        """Finish what a previous run left in the journal, before claiming anything new."""
        assert self.journal is not None
        for action in self.journal.reconcile():
            if self._give_up():
                break
            log.info("journal: %s %s left by a previous run", action.kind, action.msg_id)
            if action.kind == "ack":
                self._ack(action.msg_id, action.lease_token, action.wa_id, action.sent_at)
            else:
                self._nack(action.msg_id, action.lease_token, action.reason, action.retryable, action.detail)

    def _loop(self) -> None:
        while not self.stopping:
            if not self.connected():
                # Transports need not emit CONNECTED again after a reconnect: poll as well.
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            message = self._claim()
            if message is not None:
                self._handle(message)

    def _claim(self) -> dict[str, Any] | None:
        done, outcome = _in_thread(lambda: self.client.claim(self.config.claim_wait), "claim")
        while not done.wait(0.2):
            if self.stopping and time.monotonic() > self._stop_at + CLAIM_GRACE:
                # The lease of anything it still returns expires and the message goes back.
                log.warning("claim still in flight at stop; abandoned")
                return None
        error = outcome.get("error")
        if error is None:
            self._claim_backoff = CLAIM_ERROR_BACKOFF[0]
            return outcome["result"]
        if not isinstance(error, OrchestratorUnavailable | Refused):
            raise error
        log.warning("claim failed (%s); retrying in %.0fs", error, self._claim_backoff)
        self._stop.wait(self._claim_backoff)
        self._claim_backoff = min(self._claim_backoff * 2, CLAIM_ERROR_BACKOFF[1])
        return None

    def _handle(self, message: dict[str, Any]) -> None:
        assert self.journal is not None and self.transport is not None
        msg_id, lease = str(message["id"]), str(message["lease_token"])
        to = str(message.get("to") or "")
        self.counters["claimed"] += 1
        prior = self.journal.lookup(msg_id)
        self.journal.claimed(msg_id, to, lease)
        if prior is not None and prior.state != jr.CLAIMED:
            self._answer_known(prior, lease)
            return
        if self.stopping or not self.connected():
            why = "worker stopping" if self.stopping else "not connected"
            self._nack(msg_id, lease, NEVER_SENT_REASON, True, f"{why}; never sent")
            return
        self.journal.sending(msg_id)
        try:
            result = self.transport.send(to, str(message.get("text") or ""), message.get("media"),
                                         message_id=msg_id)
        except SendError as exc:
            self.counters["failed"] += 1
            reason, detail = send_error_report(exc)
            log.warning("message %s not sent: %s (retryable=%s)", msg_id, detail, exc.retryable)
            self.journal.failed(msg_id, reason, exc.retryable, detail)
            self._nack(msg_id, lease, reason, exc.retryable, detail)
            return
        except Exception as exc:
            # We cannot tell whether it went out: never risk sending it twice.
            self.counters["failed"] += 1
            log.exception("transport.send raised for message %s", msg_id)
            detail = f"transport error {type(exc).__name__}; outcome unknown, not retried"
            self.journal.failed(msg_id, "send_error", False, detail)
            self._nack(msg_id, lease, "send_error", False, detail)
            return
        self.counters["sent"] += 1
        self.journal.sent(msg_id, result.wa_id, result.timestamp)
        self._ack(msg_id, lease, result.wa_id, result.timestamp)

    def _answer_known(self, prior: jr.Entry, lease: str) -> None:
        """A re-claimed message the journal already knows: answer from the journal, never resend."""
        log.info("message %s re-claimed; journal says %s", prior.id, prior.state)
        if prior.state == jr.SENT:
            self._ack(prior.id, lease, prior.wa_id, prior.sent_at)
        elif prior.state == jr.SENDING:
            self._nack(prior.id, lease, "send_error", False, jr.INTERRUPTED_DETAIL)
        else:
            self._nack(prior.id, lease, prior.reason, prior.retryable, prior.detail)

    def _ack(self, msg_id: str, lease: str, wa_id: str, sent_at: float | None) -> None:
        assert self.journal is not None
        outcome = self.client.ack(msg_id, lease, wa_id, sent_at, give_up=self._give_up)
        if outcome == ACCEPTED:
            self.journal.acked(msg_id)
        elif outcome != GAVE_UP:
            self.journal.refused(msg_id)

    def _nack(self, msg_id: str, lease: str, reason: str, retryable: bool, detail: str) -> None:
        assert self.journal is not None
        outcome = self.client.nack(msg_id, lease, reason, retryable, detail, give_up=self._give_up)
        if outcome == ACCEPTED:
            self.journal.nacked(msg_id)
        elif outcome != GAVE_UP:
            self.journal.refused(msg_id)

    def _shutdown(self) -> int:
        data = self.ping_data()
        data["reason"] = self._stop_reason
        with self._ping_lock:
            self._pings_done.set()
            self.client.event("STOPPING", data)
            self._stopping_sent = True
        if self.transport is not None:
            done, outcome = _in_thread(self.transport.stop, "transport-stop")
            if not done.wait(TRANSPORT_STOP_TIMEOUT):
                log.warning("transport did not stop within %.0fs", TRANSPORT_STOP_TIMEOUT)
            elif "error" in outcome:
                log.warning("transport.stop failed: %s", type(outcome["error"]).__name__)
        left = self._stop_at + EXIT_BY - time.monotonic()
        self.client.close(timeout=max(left, 0.5))
        log.info("stopped (sent=%d failed=%d claimed=%d)", self.counters["sent"], self.counters["failed"],
                 self.counters["claimed"])
        return 0


def report_config_error(environ: Mapping[str, str], error: ConfigError) -> None:
    """Tell the orchestrator why this worker cannot start, when the environment allows it."""
    target = report_target(environ)
    if target is None:
        log.error("cannot report the error: SESSION_ID/WEBHOOK_URL/WEBHOOK_SECRET unusable")
        return
    client = OrchestratorClient(target)
    client.event("ERROR", {"code": error.code, "detail": str(error)})
    client.close(timeout=5.0)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `python -m worker_container`; returns the exit code."""
    environ = os.environ if environ is None else environ
    configure_logging(environ)
    try:
        config = WorkerConfig.from_env(environ)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        report_config_error(environ, exc)
        return 2
    worker = Worker(config)

    def on_signal(signum: int, _frame: Any) -> None:
        worker.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return worker.run()
    except Exception as exc:
        log.exception("worker crashed")
        worker.client.event("ERROR", {"code": "WORKER_CRASHED", "detail": type(exc).__name__})
        worker.client.close(timeout=3.0)
        return 1
