"""The real neonize transport dials WhatsApp only through the session's SOCKS5 proxy, by host name.

A real SOCKS5 server on 127.0.0.1 records each CONNECT it is asked for and refuses it, so nothing
ever leaves the machine. The transport runs in a child process, under strace when available,
which records every connect()/sendto() the process makes: the proxy must be the only network
peer (no DNS query, no direct dial, no proxy taken from HTTPS_PROXY). Everything after the
proxy's CONNECT (TLS, the WhatsApp handshake, login) cannot be tested here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.worker.test_worker_program import SECRET, Orchestrator
from waorch.simulator.socks5 import Socks5Server

pytest.importorskip("neonize")

ROOT = Path(__file__).resolve().parents[3]
PROXY_USER, PROXY_PASSWORD = "wa-session", "proxy-pass-xyz"
DEADLINE = 60.0  # the Go library loads in up to ~1.5 s, much slower under strace on a busy machine
STRACE = shutil.which("strace")

TRANSPORT_SCRIPT = r"""
import json, sys, threading
from worker_container.transports.base import TransportConfig
from worker_container.transports.neonize_adapter import NeonizeStartError, NeonizeTransport

events_path, proxy_url, session_dir, wanted = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lock, enough, errors = threading.Lock(), threading.Event(), []

def emit(event, data):
    with lock:
        with open(events_path, "a") as out:
            out.write(json.dumps([event, data]) + "\n")
        if event == "ERROR":
            errors.append(data)
            if len(errors) >= wanted:
                enough.set()

config = TransportConfig(session_id="it1", phone="4915100000001", proxy_url=proxy_url,
                         session_dir=session_dir, keep_alive=True)
transport = NeonizeTransport(config, emit)
try:
    transport.start()
except NeonizeStartError:
    sys.exit(3)
reached = enough.wait(60)
transport.stop()
sys.exit(0 if reached else 4)
"""


class Decoy:
    """A listener the environment's *_PROXY variables point at; nothing may ever connect to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def proxy():
    server = Socks5Server(username=PROXY_USER, password=PROXY_PASSWORD, refuse_connects=True)
    yield server.start_in_thread()
    server.stop()


@pytest.fixture
def decoy():
    listener = Decoy()
    yield listener
    listener.close()


def child_env(decoy: Decoy | None = None, **extra: str) -> dict[str, str]:
    """A clean environment; with `decoy`, every proxy variable Go or requests reads points at it."""
    # HOME spares a passwd lookup (an nscd connect in strace that would look like a resolver).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(ROOT)}
    if decoy is not None:
        decoy_url = f"http://127.0.0.1:{decoy.port}"
        env.update({name: decoy_url for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                  "ALL_PROXY", "all_proxy")})
    env.update(extra)
    return env


def traced(command: list[str], trace_path: Path) -> list[str]:
    if not STRACE:
        return command
    return [STRACE, "-f", "-qq", "-e", "signal=none", "-e", "trace=connect,sendto,sendmsg,sendmmsg",
            "-o", str(trace_path), *command]


_INET = re.compile(r'sa_family=AF_INET6?, sin6?_port=htons\((\d+)\).*?(?:inet_addr\("([^"]+)"\)|'
                   r'inet_pton\(AF_INET6, "([^"]+)")')


def network_peers(trace_path: Path) -> tuple[set[tuple[str, int]], list[str]]:
    """(inet destinations, AF_UNIX paths) of every connect/sendto/sendmsg in an strace log."""
    peers, unix_paths = set(), []
    for line in trace_path.read_text(errors="replace").splitlines():
        if "sa_family=AF_INET" in line:
            match = _INET.search(line)
            assert match, f"unparsed strace line: {line}"
            peers.add((match.group(2) or match.group(3), int(match.group(1))))
        elif "sa_family=AF_UNIX" in line:
            unix_paths.append(line)
    return peers, unix_paths


def read_events(path: Path) -> list[tuple[str, dict]]:
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def run_transport(proxy: Socks5Server, tmp_path: Path, env: dict[str, str]) -> dict:
    """Run the real transport in a child process until it reported two failed dials, then stop."""
    events_path, trace_path = tmp_path / "events.jsonl", tmp_path / "strace.log"
    session_dir = tmp_path / "sessions" / "it1"
    command = traced([sys.executable, "-c", TRANSPORT_SCRIPT, str(events_path), proxy.url, str(session_dir),
                      "2"], trace_path)
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=DEADLINE * 2)
    finally:
        kill_tree(proc)
    return {"returncode": proc.returncode, "output": output, "events": read_events(events_path),
            "trace": trace_path, "session_dir": session_dir}


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill `proc` and its children if still running (killing strace alone would orphan the worker)."""
    if proc.poll() is not None:
        return
    for process in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    proc.wait(10)


@pytest.fixture
def transport_run(proxy, tmp_path):
    return run_transport(proxy, tmp_path, child_env())


def test_whatsapp_is_reached_through_the_proxy_by_host_name(transport_run, proxy) -> None:
    assert transport_run["returncode"] == 0, transport_run["output"]  # stopped cleanly after 2 failures
    assert "Traceback" not in transport_run["output"]
    requests = list(proxy.requests)
    assert len(requests) >= 2
    for request in requests:
        # The proxy resolves the name (socks5h semantics): the worker never looked it up itself.
        assert (request.atyp, request.host, request.port) == ("domain", "web.whatsapp.com", 443)
        assert request.username == PROXY_USER  # credentials from PROXY_URL were used


def test_failed_dials_become_clean_errors_with_backoff(transport_run, proxy) -> None:
    errors = [data for event, data in transport_run["events"] if event == "ERROR"]
    assert [e["code"] for e in errors[:2]] == ["PROXY_FAILED", "PROXY_FAILED"]
    for error in errors:
        assert "web.whatsapp.com:443" in error["detail"]
        assert PROXY_PASSWORD not in error["detail"]
        assert error["retry_in"] > 0
    first, second = proxy.requests[0].at, proxy.requests[1].at
    assert second - first >= errors[0]["retry_in"] * 0.9  # waited the announced backoff
    assert {e for e, _ in transport_run["events"]} == {"ERROR"}  # no QR without a WhatsApp server
    assert (transport_run["session_dir"] / "whatsmeow.sqlite3").exists()  # per-session store in the volume


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_the_proxy_is_the_only_network_peer(transport_run, proxy) -> None:
    assert transport_run["returncode"] == 0, transport_run["output"]
    peers, unix_paths = network_peers(transport_run["trace"])
    assert peers == {("127.0.0.1", proxy.port)}, f"unexpected network peers: {peers}"
    assert not [p for p in unix_paths if "nscd" in p or "resolve" in p], unix_paths  # no local resolver
    assert (transport_run["trace"].stat().st_size > 0)  # strace really recorded the process


def test_proxy_variables_in_the_environment_refuse_the_start(proxy, decoy, tmp_path) -> None:
    # whatsmeow would tunnel through the SOCKS proxy to HTTPS_PROXY (seen before this rule), and
    # Go reads the environment the process started with, so unsetting them in Python is useless.
    run = run_transport(proxy, tmp_path, child_env(decoy))
    assert run["returncode"] == 3, run["output"]
    [(event, data)] = run["events"]
    assert (event, data["code"]) == ("ERROR", "CONFIG_INVALID")
    assert "HTTPS_PROXY" in data["detail"] and "ALL_PROXY" in data["detail"]
    assert proxy.requests == [] and decoy.accepted == 0


# ----- the whole worker program --------------------------------------------------------------

def worker_process(popen: subprocess.Popen) -> psutil.Process:
    """The python process itself (under strace, `popen` is strace and ignores SIGTERM's meaning)."""
    if not STRACE:
        return psutil.Process(popen.pid)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        children = psutil.Process(popen.pid).children()
        if children:
            return children[0]
        time.sleep(0.05)
    raise AssertionError("strace never started the worker")


def test_worker_program_with_neonize_reports_proxy_failure_and_stops_cleanly(proxy, tmp_path) -> None:
    orchestrator = Orchestrator("s1")
    trace_path = tmp_path / "worker-strace.log"
    log_path = tmp_path / "worker.log"
    env = child_env(SESSION_ID="s1", PHONE="4915100000001", PROXY_URL=proxy.url,
                    WEBHOOK_URL=orchestrator.url + "/api/webhook", WEBHOOK_SECRET=SECRET,
                    SESSIONS_DIR=str(tmp_path / "sessions"), TRANSPORT="neonize", PING_INTERVAL="1",
                    CLAIM_WAIT="2", ENABLE_KEEP_ALIVE="true")
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(traced([sys.executable, "-m", "worker_container"], trace_path), cwd=ROOT,
                                  env=env, stdout=log, stderr=log)
    try:
        orchestrator.wait_for(lambda reqs: any(r["kind"] == "event" and r["body"]["event"] == "ERROR"
                                               and r["body"]["data"].get("code") == "PROXY_FAILED"
                                               for r in reqs), "ERROR PROXY_FAILED", timeout=DEADLINE)
        orchestrator.wait_for(lambda reqs: any(r["kind"] == "event" and r["body"]["event"] == "PING"
                                               for r in reqs), "PING", timeout=DEADLINE)
        worker_process(worker).send_signal(signal.SIGTERM)
        assert worker.wait(DEADLINE) == 0  # strace exits with its tracee's exit code
    finally:
        kill_tree(worker)
        orchestrator.close()
    log_text = log_path.read_text(errors="replace")
    assert orchestrator.refused == []
    pings = orchestrator.events("PING")
    assert pings and all(p["data"]["connected"] is False for p in pings)
    assert orchestrator.of_kind("claim") == []  # never claims while not connected
    assert orchestrator.events("STOPPING")
    assert all(PROXY_PASSWORD not in json.dumps(r["body"]) for r in orchestrator.requests)
    assert PROXY_PASSWORD not in log_text
    assert {(r.atyp, r.host, r.port) for r in proxy.requests} == {("domain", "web.whatsapp.com", 443)}
    if STRACE:
        peers, _ = network_peers(trace_path)
        orchestrator_port = int(orchestrator.url.rsplit(":", 1)[1])
        assert peers <= {("127.0.0.1", proxy.port), ("127.0.0.1", orchestrator_port)}, peers


def test_worker_program_refuses_to_start_with_proxy_variables(proxy, decoy, tmp_path) -> None:
    orchestrator = Orchestrator("s1")
    env = child_env(decoy, SESSION_ID="s1", PHONE="4915100000001", PROXY_URL=proxy.url,
                    WEBHOOK_URL=orchestrator.url + "/api/webhook", WEBHOOK_SECRET=SECRET,
                    SESSIONS_DIR=str(tmp_path / "sessions"), TRANSPORT="neonize", PING_INTERVAL="1")
    env.pop("HTTP_PROXY"), env.pop("http_proxy")  # the worker's own HTTP to the orchestrator works
    env["NO_PROXY"] = "127.0.0.1"
    try:
        done = subprocess.run([sys.executable, "-m", "worker_container"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=DEADLINE)
        assert done.returncode != 0
        codes = [e["data"]["code"] for e in orchestrator.events("ERROR")]
        assert codes[0] == "CONFIG_INVALID", codes
        assert "HTTPS_PROXY" in orchestrator.events("ERROR")[0]["data"]["detail"]
    finally:
        orchestrator.close()
    assert orchestrator.of_kind("claim") == []
    assert proxy.requests == [] and decoy.accepted == 0
