"""The whole orchestrator loop with real parts: gateway over HTTP, simulator, SOCKS5 proxies on
127.0.0.x, `waorch supervisor` running real `python -m worker_container` processes.

Shows: a killed worker comes back CONNECTED with its data (no new QR scan), a silent worker is
restarted by the watchdog, and a proxy going BAD moves its session to another proxy, where it
reconnects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from functools import partial

import pytest
import requests

from tests.support import waiting
from tests.support.api_client import ThreadedGateway
from tests.support.supervisor_process import running_pid, running_supervisor
from waorch.core import keys, settings
from waorch.fleet import lifecycle, proxy_failover, watchdog
from waorch.proxies.pool import ProxyPool
from waorch.runners.process import ProcessRunner
from waorch.sessions import registry as sessions
from waorch.simulator.server import Simulator
from waorch.simulator.socks5 import Socks5Server
from waorch.simulator.state import SimConfig

PHONE = "4915123450001"
DEADLINE = 90.0
wait_for = partial(waiting.wait_for, timeout=DEADLINE, interval=0.1)



class Stack:
    def __init__(self, r, sim, proxies, supervisor, runner):
        self.r, self.sim, self.proxies, self.supervisor, self.runner = r, sim, proxies, supervisor, runner

    def status(self, sid: str) -> str | None:
        return self.r.hget(keys.session(sid), "status")

    def pid(self, sid: str) -> int | None:
        return running_pid(self.runner, sid)

    def connect(self, phone: str = PHONE) -> dict:
        """Create a session, scan its QR at the simulator, wait until CONNECTED."""
        s = lifecycle.create_session(self.r, "acme", phone)
        wait_for(lambda: self.r.exists(keys.session_qr(s["id"])), "a QR from the worker")
        answer = requests.post(f"{self.sim.url}/sim/accounts/{phone}/scan", timeout=10)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: self.status(s["id"]) == "connected", "CONNECTED")
        return s

    def qr_events(self, sid: str) -> int:
        return sum(1 for e in self.r.lrange(keys.session_events(sid), 0, -1) if '"QR"' in e)


@pytest.fixture
def stack(r, tmp_path, monkeypatch):
    sim = Simulator(config=SimConfig(receipt_delay=0.05, read_delay=0.05)).start_in_thread()
    proxies = [Socks5Server(host=f"127.0.0.{i}", username="w", password="pw-secret",
                            outbound_source=f"127.0.0.{i}").start_in_thread() for i in (2, 3)]
    from app import create_app

    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WAORCH_TRANSPORT", "sim")
    monkeypatch.setenv("WAORCH_SIM_WIRE", sim.wire)
    monkeypatch.setenv("WAORCH_PING_INTERVAL", "1")
    monkeypatch.setenv("WAORCH_PING_TIMEOUT", "6")
    monkeypatch.setenv("WAORCH_PROXY_FAIL_THRESHOLD", "1")
    monkeypatch.setenv("WAORCH_PROXY_CHECK_TIMEOUT", "3")
    monkeypatch.setenv("WAORCH_RESTART_BACKOFF_MAX", "2")
    gateway = ThreadedGateway(create_app())
    monkeypatch.setenv("WAORCH_PUBLIC_URL", gateway.url)
    settings.get.cache_clear()
    try:
        with gateway, running_supervisor({**os.environ}, tmp_path / "supervisor.log", 40) as supervisor:
            runner = ProcessRunner(r)
            stack = Stack(r, sim, proxies, supervisor, runner)
            wait_for(lambda: r.exists("runner:process:heartbeat"), "the supervisor")
            ProxyPool(r).add(proxies[0].url)
            yield stack
    finally:
        for p in proxies:
            p.stop()
        sim.stop()


def test_killed_worker_comes_back_connected_with_its_data(stack):
    s = stack.connect()
    first = wait_for(lambda: stack.pid(s["id"]), "the worker pid")
    assert stack.qr_events(s["id"]) >= 1
    qr_before = stack.qr_events(s["id"])
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (p := stack.pid(s["id"])) and p != first, "a new worker")
    wait_for(lambda: stack.status(s["id"]) == "connected"
             and stack.r.hget(keys.session(s["id"]), "connected_at") is not None
             and float(stack.r.hget(keys.session(s["id"]), "connected_at")) > time.time() - 60,
             "CONNECTED again")
    # its stored credentials were used: no new QR, no new scan
    assert stack.qr_events(s["id"]) == qr_before
    assert any((sessions.sessions_root() / s["id"]).iterdir())


def test_silent_worker_is_restarted_by_the_watchdog(stack):
    s = stack.connect()
    frozen = wait_for(lambda: stack.pid(s["id"]), "the worker pid")
    os.kill(frozen, signal.SIGSTOP)  # alive for the runner, but no more PINGs
    try:
        def watchdog_restarted() -> bool:
            report = watchdog.reconcile(stack.r, stack.runner)
            return s["id"] in report["restarted"]

        wait_for(watchdog_restarted, "the watchdog to notice the missing PINGs", timeout=60)
        assert stack.r.hget(keys.session(s["id"]), "status") == "starting"
        wait_for(lambda: (p := stack.pid(s["id"])) and p != frozen, "a fresh worker", timeout=60)
        wait_for(lambda: stack.status(s["id"]) == "connected", "CONNECTED again with its data")
        assert stack.qr_events(s["id"]) == 1
        assert int(stack.r.hget(keys.session(s["id"]), "restarts")) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)


def test_bad_proxy_moves_the_session_and_it_reconnects(stack):
    first, second = stack.proxies
    s = stack.connect()
    assert s["proxy_url"] == first.url
    ProxyPool(stack.r).add(second.url)
    first.fail = True
    first.drop_connections()
    view = proxy_failover.check_proxy(stack.r, first.url)
    assert view["status"] == "BAD" and view["change"] == "burned"
    assert sessions.get_session(stack.r, s["id"])["proxy_url"] == second.url
    wait_for(lambda: stack.status(s["id"]) == "connected"
             and any(req.host == stack.sim.wire.rsplit(":", 1)[0] for req in second.requests),
             "CONNECTED through the new proxy")
    assert ProxyPool(stack.r).sticky(PHONE) == second.url

