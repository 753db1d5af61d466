"""`python -m worker_container` as a real child process against a real HTTP peer.

The peer (`Orchestrator` below) plays the orchestrator's side of the documented worker HTTP
contract and checks every signature with waorch.core.signing.verify; it is a stand-in for the network
peer only, kept minimal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.local_http import LocalHttpServer, Reply
from waorch.core.signing import verify
from worker_container import healthcheck
from worker_container.journal import Journal

ROOT = Path(__file__).resolve().parents[3]
SECRET = "per-session-secret-for-tests"
DEADLINE = 30.0  # generous: the machine is shared and loaded


class Orchestrator(LocalHttpServer):
    """Records signed worker requests; serves claims from `messages`; answers 204."""

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.requests: list[dict[str, Any]] = []  # {"kind", "path", "body"}
        self.refused: list[str] = []  # why requests were refused (must stay empty)
        self.messages: list[dict[str, Any]] = []
        self.unavailable = 0  # answer this many upcoming requests 503, as an overloaded gateway would
        self.hold_acks = False  # record ACKs but never answer them (the worker dies waiting)
        self.cond = threading.Condition()
        self._nonces: set[str] = set()
        self.closed = False
        self.start()

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        status, answer = self.handle(path, body, headers.get("X-Timestamp"), headers.get("X-Signature"))
        data = json.dumps(answer).encode() if answer is not None else b""
        return status, {"Content-Type": "application/json"}, data

    def handle(self, path: str, raw: bytes, ts: str | None, sig: str | None) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse("body is not JSON")
        if not verify(SECRET, ts, sig, raw, max_skew=300):
            return self._refuse(f"bad signature on {path}")
        if body.get("session_id") != self.session_id:
            return self._refuse("wrong session_id")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not nonce or nonce in self._nonces:
            return self._refuse("missing or replayed nonce")
        self._nonces.add(nonce)
        prefix = f"/api/worker/sessions/{self.session_id}/outbox/"
        if path == "/api/webhook":
            kind = "event"
        elif path == prefix + "claim":
            kind = "claim"
        elif path.startswith(prefix) and path.rsplit("/", 1)[-1] in ("ack", "nack"):
            kind = path.rsplit("/", 1)[-1]
            body["msg_id"] = path[len(prefix):].rsplit("/", 1)[0]
        else:
            return self._refuse(f"unknown path {path}")
        with self.cond:
            if self.unavailable > 0:
                self.unavailable -= 1
                return 503, {"code": "unavailable"}
            self.requests.append({"kind": kind, "path": path, "body": body})
            self.cond.notify_all()
        if kind == "claim":
            return self._claim(float(body.get("wait", 0)))
        if kind == "ack" and self.hold_acks:
            with self.cond:
                self.cond.wait_for(lambda: not self.hold_acks or self.closed, timeout=DEADLINE)
            return 503, None
        return 204, None

    def _refuse(self, why: str) -> tuple[int, Any]:
        with self.cond:
            self.refused.append(why)
            self.cond.notify_all()
        return 401, {"code": "unauthorized", "message": why}

    def _claim(self, wait: float) -> tuple[int, Any]:
        deadline = time.monotonic() + min(wait, 25)
        with self.cond:
            while not self.messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 204, None
                self.cond.wait(remaining)
            return 200, self.messages.pop(0)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], what: str,
                 timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = predicate(self.requests)
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got {self.kinds()}")
                self.cond.wait(remaining)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self.cond:
            return [r["body"] for r in self.requests if r["kind"] == "event" and r["body"]["event"] == name]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self.cond:
            return [r["body"] for r in self.requests if r["kind"] == kind]

    def kinds(self) -> list[str]:
        return [r["kind"] if r["kind"] != "event" else r["body"]["event"] for r in self.requests]

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.stop()


@pytest.fixture
def orchestrator():
    peer = Orchestrator("s1")
    yield peer
    peer.close()
    assert peer.refused == [], "the worker sent requests the orchestrator would refuse"


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "worker_container"], cwd=ROOT, env=full_env,
                                     stdout=self._log, stderr=self._log)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path):
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def base_env(orchestrator: Orchestrator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "SESSION_ID": "s1",
        "PHONE": "4915100000001",
        "PROXY_URL": "socks5h://user:proxy-pass-xyz@127.0.0.1:1",
        "WEBHOOK_URL": orchestrator.url + "/api/webhook",
        "WEBHOOK_SECRET": SECRET,
        "SESSIONS_DIR": str(tmp_path / "sessions"),
        "TRANSPORT": "sim",
        "SIM_WIRE": "127.0.0.1:1",
        "PING_INTERVAL": "1",
        "CLAIM_WAIT": "2",
    }
    env.update(extra)
    return env


def assert_no_secrets(text: str) -> None:
    assert SECRET not in text
    assert "proxy-pass-xyz" not in text


# ----- configuration errors ------------------------------------------------------------------

def test_config_error_is_reported_and_exits_2(orchestrator, start_worker, tmp_path) -> None:
    worker = start_worker(base_env(orchestrator, tmp_path, PING_INTERVAL="60"))
    assert worker.wait() == 2
    errors = orchestrator.events("ERROR")
    assert len(errors) == 1
    assert errors[0]["data"]["code"] == "CONFIG_INVALID"
    assert "PING_INTERVAL" in errors[0]["data"]["detail"]
    assert orchestrator.of_kind("claim") == []
    assert "PING_INTERVAL" in worker.log()
    assert_no_secrets(worker.log())


def test_missing_proxy_reports_proxy_failed_and_exits_nonzero(orchestrator, start_worker, tmp_path) -> None:
    env = base_env(orchestrator, tmp_path)
    del env["PROXY_URL"]
    worker = start_worker(env)
    assert worker.wait() != 0
    errors = orchestrator.events("ERROR")
    assert [e["data"]["code"] for e in errors] == ["PROXY_FAILED"]
    assert "PROXY_URL" in errors[0]["data"]["detail"]
    assert not (tmp_path / "sessions" / "s1").exists()


def test_unusable_proxy_url_never_shows_its_password(orchestrator, start_worker, tmp_path) -> None:
    worker = start_worker(base_env(orchestrator, tmp_path,
                                   PROXY_URL="socks4://user:proxy-pass-xyz@127.0.0.1:1080"))
    assert worker.wait() == 2
    errors = orchestrator.events("ERROR")
    assert [e["data"]["code"] for e in errors] == ["PROXY_FAILED"]
    assert_no_secrets(json.dumps(errors))
    assert_no_secrets(worker.log())


def test_error_report_survives_an_unavailable_orchestrator(orchestrator, start_worker, tmp_path) -> None:
    orchestrator.unavailable = 2
    worker = start_worker(base_env(orchestrator, tmp_path, CLAIM_WAIT="99"))
    assert worker.wait() == 2
    assert orchestrator.unavailable == 0
    assert [e["data"]["code"] for e in orchestrator.events("ERROR")] == ["CONFIG_INVALID"]


def test_config_error_without_reporting_target_still_exits_2(orchestrator, start_worker, tmp_path) -> None:
    env = base_env(orchestrator, tmp_path)
    del env["WEBHOOK_SECRET"]
    worker = start_worker(env)
    assert worker.wait() == 2
    assert "WEBHOOK_SECRET" in worker.log()
    assert orchestrator.requests == []


# ----- journal reconcile at startup ----------------------------------------------------------

def write_journal(tmp_path: Path, fill: Callable[[Journal], None]) -> Path:
    path = tmp_path / "sessions" / "s1" / "outbox-journal.jsonl"
    journal = Journal(str(path))
    fill(journal)
    journal.close()
    return path


def test_startup_reacks_sent_and_nacks_interrupted_before_claiming(orchestrator, start_worker,
                                                                   tmp_path) -> None:
    def fill(j: Journal) -> None:
        j.claimed("m-sent", "4915100000002", "lease-a")
        j.sending("m-sent")
        j.sent("m-sent", "WA-SENT-1", 1700000000.0)
        j.claimed("m-mid", "4915100000003", "lease-b")
        j.sending("m-mid")
        j.claimed("m-never", "4915100000004", "lease-c")

    path = write_journal(tmp_path, fill)
    worker = start_worker(base_env(orchestrator, tmp_path))
    orchestrator.wait_for(lambda reqs: sum(r["kind"] in ("ack", "nack") for r in reqs) >= 3, "reconcile")

    acks = orchestrator.of_kind("ack")
    assert [(a["msg_id"], a["lease_token"], a["wa_id"], a["sent_at"]) for a in acks] == \
        [("m-sent", "lease-a", "WA-SENT-1", 1700000000.0)]
    nacks = {n["msg_id"]: n for n in orchestrator.of_kind("nack")}
    assert (nacks["m-mid"]["reason"], nacks["m-mid"]["retryable"]) == ("send_error", False)
    assert nacks["m-mid"]["detail"] == "interrupted during send; not retried to avoid a duplicate"
    assert nacks["m-never"]["retryable"] is True
    # Everything left over was settled before the first claim.
    kinds = [k for k in orchestrator.kinds() if k in ("ack", "nack", "claim")]
    assert "claim" not in kinds[:3]

    worker.proc.send_signal(signal.SIGTERM)
    worker.wait()
    assert Journal(str(path)).reconcile() == []


# ----- with the simulator behind a real SOCKS5 proxy -----------------------------------------

needs_sim_transport = pytest.mark.skipif(
    importlib.util.find_spec("worker_container.transports.sim") is None,
    reason="worker_container/transports/sim.py is not written yet")


@pytest.fixture
def network():
    """A simulator that pairs waiting sessions by itself, and a password-protected SOCKS5 proxy."""
    from waorch.simulator.server import Simulator
    from waorch.simulator.socks5 import Socks5Server
    from waorch.simulator.state import SimConfig

    config = SimConfig(demo_scan_after=0.3, receipt_delay=0.1, read_delay=0.2)
    sim = Simulator(config=config).start_in_thread()
    proxy = Socks5Server(username="user", password="proxy-pass-xyz").start_in_thread()
    yield sim, proxy
    proxy.stop()
    sim.stop()


def sim_env(orchestrator: Orchestrator, tmp_path: Path, network, **extra: str) -> dict[str, str]:
    sim, proxy = network
    return base_env(orchestrator, tmp_path, PROXY_URL=proxy.url, SIM_WIRE=sim.wire, **extra)


def sim_messages(network, **query: str) -> list[dict[str, Any]]:
    sim, _ = network
    response = requests.get(f"{sim.url}/sim/messages", params=query, timeout=10)
    response.raise_for_status()
    return response.json()


def outbox_message(msg_id: str, lease: str, to: str = "4915100000009", text: str = "hello") -> dict[str, Any]:
    return {"id": msg_id, "to": to, "text": text, "media": None, "lease_token": lease,
            "lease_expires_at": time.time() + 60, "attempt": 1}


def connected(orchestrator: Orchestrator) -> None:
    orchestrator.wait_for(lambda reqs: any(r["kind"] == "event" and r["body"]["event"] == "CONNECTED"
                                           for r in reqs), "CONNECTED")


def open_journal_entries(tmp_path: Path) -> list:
    return Journal(str(tmp_path / "sessions" / "s1" / "outbox-journal.jsonl")).open_entries()


@needs_sim_transport
def test_sends_claimed_message_once_and_acks(orchestrator, start_worker, tmp_path, network) -> None:
    worker = start_worker(sim_env(orchestrator, tmp_path, network))
    connected(orchestrator)
    with orchestrator.cond:
        orchestrator.messages.append(outbox_message("m1", "lease-1"))
        orchestrator.cond.notify_all()
    ack = orchestrator.wait_for(lambda reqs: [r["body"] for r in reqs if r["kind"] == "ack"], "ack")[0]
    assert (ack["msg_id"], ack["lease_token"]) == ("m1", "lease-1")
    assert ack["wa_id"]
    sent = sim_messages(network, to="4915100000009")
    assert [m["text"] for m in sent] == ["hello"]
    assert sent[0]["from"] == "4915100000001"
    assert network[1].requests, "the worker must reach the simulator through its proxy"
    ping = orchestrator.wait_for(lambda reqs: [r["body"]["data"] for r in reqs if r["kind"] == "event"
                                               and r["body"]["event"] == "PING"
                                               and r["body"]["data"].get("sent") == 1], "PING sent=1")[0]
    assert ping["connected"] is True and ping["claimed"] == 1 and ping["pid"] == worker.proc.pid
    # the image's HEALTHCHECK reads the heartbeat the worker writes on every PING
    [beat] = list(tmp_path.rglob("heartbeat.json"))
    assert healthcheck.check(str(beat.parent))[0]
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert orchestrator.events("STOPPING")
    assert open_journal_entries(tmp_path) == []
    assert_no_secrets(worker.log())


@needs_sim_transport
def test_sigterm_while_long_polling_exits_0_quickly(orchestrator, start_worker, tmp_path, network) -> None:
    worker = start_worker(sim_env(orchestrator, tmp_path, network, CLAIM_WAIT="25"))
    connected(orchestrator)
    orchestrator.wait_for(lambda reqs: any(r["kind"] == "claim" for r in reqs), "a claim")
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert time.monotonic() - started < 10.0
    stopping = orchestrator.events("STOPPING")
    assert len(stopping) == 1 and stopping[0]["data"]["reason"] == "SIGTERM"
    # No PING or ERROR after STOPPING: the orchestrator takes STOPPING as the last word.
    kinds = orchestrator.kinds()
    assert not {"PING", "ERROR"} & set(kinds[kinds.index("STOPPING"):])


@needs_sim_transport
def test_does_not_claim_until_connected(orchestrator, start_worker, tmp_path, network) -> None:
    sim, _ = network
    sim.network.config.demo_scan_after = None  # nobody scans: the session stays at its QR code
    worker = start_worker(sim_env(orchestrator, tmp_path, network))
    orchestrator.wait_for(lambda reqs: len([r for r in reqs if r["kind"] == "event"
                                            and r["body"]["event"] == "PING"]) >= 3, "3 PINGs")
    assert orchestrator.of_kind("claim") == []
    assert all(p["data"]["connected"] is False for p in orchestrator.events("PING"))
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0


@needs_sim_transport
def test_reclaimed_message_known_as_sent_is_acked_without_sending(orchestrator, start_worker, tmp_path,
                                                                 network) -> None:
    def fill(j: Journal) -> None:
        j.claimed("m-old", "4915100000009", "lease-old")
        j.sending("m-old")
        j.sent("m-old", "WA-OLD", 1700000000.0)
        j.refused("m-old")  # e.g. the re-ACK was refused: the journal still remembers the send
        j.claimed("m-mid", "4915100000009", "lease-mid")
        j.sending("m-mid")
        j.refused("m-mid")

    write_journal(tmp_path, fill)
    with orchestrator.cond:
        orchestrator.messages += [outbox_message("m-old", "lease-new"), outbox_message("m-mid", "lease-new2")]
    worker = start_worker(sim_env(orchestrator, tmp_path, network))
    orchestrator.wait_for(lambda reqs: sum(r["kind"] in ("ack", "nack") for r in reqs) >= 2, "ack+nack")
    [ack] = orchestrator.of_kind("ack")
    assert (ack["msg_id"], ack["lease_token"], ack["wa_id"]) == ("m-old", "lease-new", "WA-OLD")
    [nack] = orchestrator.of_kind("nack")
    assert (nack["msg_id"], nack["lease_token"], nack["retryable"]) == ("m-mid", "lease-new2", False)
    assert sim_messages(network, to="4915100000009") == []
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    [stopping] = orchestrator.events("STOPPING")
    assert (stopping["data"]["sent"], stopping["data"]["claimed"]) == (0, 2)


@needs_sim_transport
def test_killed_between_send_and_ack_is_sent_exactly_once(orchestrator, start_worker, tmp_path,
                                                          network) -> None:
    orchestrator.hold_acks = True
    first = start_worker(sim_env(orchestrator, tmp_path, network))
    connected(orchestrator)
    with orchestrator.cond:
        orchestrator.messages.append(outbox_message("m1", "lease-1"))
        orchestrator.cond.notify_all()
    held = orchestrator.wait_for(lambda reqs: [r["body"] for r in reqs if r["kind"] == "ack"], "held ack")[0]
    first.proc.kill()  # SIGKILL: after the send, before the orchestrator answered the ACK
    first.wait()
    assert len(sim_messages(network, to="4915100000009")) == 1

    orchestrator.hold_acks = False
    second = start_worker(sim_env(orchestrator, tmp_path, network))
    orchestrator.wait_for(lambda reqs: len([r for r in reqs if r["kind"] == "ack"]) >= 2, "re-ACK")
    reack = orchestrator.of_kind("ack")[1]
    assert (reack["msg_id"], reack["lease_token"], reack["wa_id"]) == ("m1", "lease-1", held["wa_id"])

    def claim_after_reack(reqs: list[dict[str, Any]]) -> bool:
        acks = [i for i, r in enumerate(reqs) if r["kind"] == "ack"]
        return any(r["kind"] == "claim" for r in reqs[acks[1]:])

    orchestrator.wait_for(claim_after_reack, "a claim after the re-ACK")
    assert len(sim_messages(network, to="4915100000009")) == 1
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait() == 0
    # The simulator deduplicates by message id, so also check that the transport was not asked.
    [stopping] = orchestrator.events("STOPPING")
    assert stopping["data"]["sent"] == 0
    assert open_journal_entries(tmp_path) == []


@needs_sim_transport
def test_failed_sends_are_nacked_with_their_reason(orchestrator, start_worker, tmp_path, network) -> None:
    sim, _ = network
    worker = start_worker(sim_env(orchestrator, tmp_path, network))
    connected(orchestrator)
    with orchestrator.cond:
        orchestrator.messages.append(outbox_message("m-bad", "lease-1", to="12"))
        orchestrator.cond.notify_all()
    orchestrator.wait_for(lambda reqs: any(r["kind"] == "nack" for r in reqs), "nack of m-bad")
    response = requests.post(f"{sim.url}/sim/accounts/4915100000001/restrict",
                             json={"seconds": 3600, "reason": "reach-out time-lock"}, timeout=10)
    response.raise_for_status()
    until = int(response.json()["until"])
    with orchestrator.cond:
        orchestrator.messages.append(outbox_message("m-locked", "lease-2"))
        orchestrator.cond.notify_all()
    orchestrator.wait_for(lambda reqs: sum(r["kind"] == "nack" for r in reqs) >= 2, "nack of m-locked")
    nacks = {n["msg_id"]: n for n in orchestrator.of_kind("nack")}
    assert (nacks["m-bad"]["reason"], nacks["m-bad"]["retryable"]) == ("invalid_recipient", False)
    assert nacks["m-locked"]["reason"] == "send_error"
    assert nacks["m-locked"]["detail"].startswith("RESTRICTED")
    assert f"until={until}" in nacks["m-locked"]["detail"]
    assert orchestrator.of_kind("ack") == []
    assert sim_messages(network, to="4915100000009") == []
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert open_journal_entries(tmp_path) == []
