"""Helpers for tests of the simulator through real SOCKS5 proxies and its HTTP API (fixtures are in
tests/integration/simulator/conftest.py)."""

from __future__ import annotations

import requests

from tests.support.wire_client import WireClient

ALICE, BOB, CAROL, DAVE = "15550000001", "15550000002", "15550000003", "15550000004"


def connect(clients, proxy, sim) -> WireClient:
    client = WireClient(proxy.url, sim.wire)
    clients.append(client)
    return client


def pair(clients, proxy, sim, phone: str, session: str = "s1") -> str:
    """QR → scan → paired; returns the creds."""
    client = connect(clients, proxy, sim)
    client.hello(phone, session)
    client.expect("qr")
    assert requests.post(f"{sim.url}/sim/accounts/{phone}/scan", timeout=10).status_code == 200
    creds = client.expect("paired")["creds"]
    client.expect_closed()
    return creds


def login(clients, proxy, sim, phone: str, creds: str, session: str = "s1") -> WireClient:
    client = connect(clients, proxy, sim)
    client.hello(phone, session, creds=creds)
    client.expect("connected")
    return client


def online(clients, proxy, sim, phone: str, session: str = "s1") -> WireClient:
    """Pair then log in: a connected client."""
    return login(clients, proxy, sim, phone, pair(clients, proxy, sim, phone, session), session)


def account(sim, phone: str) -> dict:
    response = requests.get(f"{sim.url}/sim/accounts/{phone}", timeout=10)
    assert response.status_code == 200
    return response.json()


def api(sim, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{sim.url}{path}", timeout=10, **kwargs)


def send(client: WireClient, ref: str, to: str, text: str = "hi", **fields) -> dict:
    """One send over the wire; its send_result."""
    client.request(op="send", ref=ref, to=to, text=text, **fields)
    return client.expect("send_result", ref=ref)
