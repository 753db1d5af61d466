"""Fixtures of the simulator tests: simulators on their own threads, SOCKS5 proxies on 127.0.0.2-3,
and wire clients closed afterwards."""

from __future__ import annotations

import pytest

from tests.support.wire_client import WireClient
from waorch.simulator import SimConfig, Simulator
from waorch.simulator.socks5 import Socks5Server


@pytest.fixture
def make_sim():
    started = []

    def make(**config) -> Simulator:
        options = {"receipt_delay": 0.05, "read_delay": 0.05, **config}
        sim = Simulator(config=SimConfig(**options)).start_in_thread()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    return make_sim()


@pytest.fixture
def proxies():
    servers = [Socks5Server(host=h, outbound_source=h).start_in_thread() for h in ("127.0.0.2", "127.0.0.3")]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def clients():
    opened: list[WireClient] = []
    yield opened
    for client in opened:
        client.close()
