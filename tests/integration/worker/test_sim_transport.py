"""SimTransport end to end: a real simulator reached through a real SOCKS5 proxy."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import requests

from waorch.simulator import SimConfig, Simulator
from waorch.simulator.socks5 import Socks5Server
from worker_container.transports.base import SendError, TransportConfig
from worker_container.transports.sim import CREDS_FILE, SimTransport

PHONE, OTHER = "15551230001", "15551230002"
DEADLINE = 30.0


class Recorder:
    """The transport's emit callback: keeps every event, lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self._changed = threading.Condition()

    def __call__(self, event_type: str, data: dict) -> None:
        with self._changed:
            self.events.append((event_type, data))
            self._changed.notify_all()

    def wait_for(self, event_type: str, after: int = 0, **match) -> tuple[int, dict]:
        """(index, data) of the first `event_type` event at index >= after whose data has `match`."""
        deadline = time.monotonic() + DEADLINE
        with self._changed:
            while True:
                for index, (kind, data) in enumerate(self.events[after:], start=after):
                    if kind == event_type and all(data.get(k) == v for k, v in match.items()):
                        return index, data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {event_type} {match} after #{after}; got {self.events}")
                self._changed.wait(remaining)

    def kinds(self) -> list[str]:
        with self._changed:
            return [kind for kind, _ in self.events]


@pytest.fixture
def sim():
    simulator = Simulator(config=SimConfig(receipt_delay=0.05, read_delay=0.05)).start_in_thread()
    yield simulator
    simulator.stop()


@pytest.fixture
def proxy():
    server = Socks5Server(host="127.0.0.2", outbound_source="127.0.0.2", username="worker",
                          password="p@ss word").start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def make_transport(tmp_path, sim, proxy):
    made: list[SimTransport] = []

    def make(phone: str = PHONE, session: str = "sess-1", proxy_url: str | None = None,
             wire: str | None = None, keep_alive: bool = True) -> tuple[SimTransport, Recorder]:
        recorder = Recorder()
        config = TransportConfig(session_id=session, phone=phone, proxy_url=proxy_url or proxy.url,
                                 session_dir=str(tmp_path / session), profile={"os": "Ubuntu"},
                                 keep_alive=keep_alive, sim_wire=wire or sim.wire)
        transport = SimTransport(config, recorder)
        transport.backoff_initial, transport.backoff_max = 0.1, 0.5
        made.append(transport)
        return transport, recorder

    yield make
    for transport in made:
        transport.stop()


def sim_post(sim, path: str, **body) -> requests.Response:
    return requests.post(f"{sim.url}{path}", json=body or None, timeout=10)


def paired_transport(make_transport, sim, **kwargs) -> tuple[SimTransport, Recorder]:
    transport, events = make_transport(**kwargs)
    transport.start()
    events.wait_for("QR")
    assert sim_post(sim, f"/sim/accounts/{kwargs.get('phone', PHONE)}/scan").status_code == 200
    events.wait_for("CONNECTED")
    return transport, events


def test_pair_send_and_receipts(make_transport, sim, proxy, tmp_path):
    transport, events = make_transport()
    with pytest.raises(SendError) as early:
        transport.send(OTHER, "too early")
    assert (early.value.code, early.value.retryable) == ("NOT_CONNECTED", True)
    transport.start()
    qr_at, qr = events.wait_for("QR")
    assert qr["qr"].startswith("2@sim,")
    assert not transport.connected()
    assert sim_post(sim, f"/sim/accounts/{PHONE}/scan").status_code == 200
    connected_at, connected = events.wait_for("CONNECTED")
    assert connected_at > qr_at and connected["jid"] == f"{PHONE}@s.whatsapp.net"
    assert "ERROR" not in events.kinds()  # the restart after pairing is not a lost connection
    assert transport.connected()
    stored = json.loads((tmp_path / "sess-1" / CREDS_FILE).read_text())
    assert stored["phone"] == PHONE and stored["creds"].startswith("sim1.")
    assert oct(os.stat(tmp_path / "sess-1" / CREDS_FILE).st_mode & 0o777) == "0o600"

    result = transport.send(f"+{OTHER}", "hello", message_id="m-1")
    assert result.wa_id.startswith("3EB0") and result.timestamp > 0
    delivered_at, _ = events.wait_for("MESSAGE_STATUS", wa_id=result.wa_id, status="delivered")
    read_at, read = events.wait_for("MESSAGE_STATUS", wa_id=result.wa_id, status="read")
    assert read_at > delivered_at and read["at"] > 0

    messages = requests.get(f"{sim.url}/sim/messages", params={"from": PHONE}, timeout=10).json()
    assert [(m["id"], m["to"], m["text"], m["source_address"], m["session"]) for m in messages] == [
        (result.wa_id, OTHER, "hello", "127.0.0.2", "sess-1")]
    assert {r.username for r in proxy.requests} == {"worker"}
    # A resend of the same message id (after a lost answer) is not a second message.
    assert transport.send(OTHER, "hello", message_id="m-1").wa_id == result.wa_id
    assert len(requests.get(f"{sim.url}/sim/messages", timeout=10).json()) == 1
    assert transport.counters()["sends_ok"] == 2


def test_stored_creds_log_in_without_qr(make_transport, sim):
    first, _ = paired_transport(make_transport, sim)
    first.stop()
    again, events = make_transport()
    again.start()
    events.wait_for("CONNECTED")
    assert "QR" not in events.kinds()


def test_inbound_messages_are_emitted(make_transport, sim):
    _, events = paired_transport(make_transport, sim)
    response = sim_post(sim, "/sim/inbound", **{"from": OTHER, "to": PHONE, "text": "STOP"})
    _, inbound = events.wait_for("INBOUND")
    assert (inbound["from"], inbound["text"], inbound["wa_id"], inbound["media"]) == (
        OTHER, "STOP", response.json()["wa_id"], None)


def test_reconnects_after_a_disconnect(make_transport, sim):
    transport, events = paired_transport(make_transport, sim)
    mark = len(events.events)
    assert sim_post(sim, f"/sim/accounts/{PHONE}/disconnect").json()["closed"] is True
    lost_at, lost = events.wait_for("ERROR", after=mark, code="CONNECTION_LOST")
    events.wait_for("CONNECTED", after=lost_at)
    assert transport.send(OTHER, "after reconnect").wa_id
    assert transport.counters()["reconnects"] >= 1


def test_proxy_down_reports_proxy_failed_then_recovers(make_transport, sim, proxy):
    transport, events = paired_transport(make_transport, sim)
    proxy.fail = True
    mark = len(events.events)
    sim_post(sim, f"/sim/accounts/{PHONE}/disconnect")
    failed_at, failed = events.wait_for("ERROR", after=mark, code="PROXY_FAILED")
    assert "p@ss" not in failed["detail"] and "word" not in failed["detail"]
    assert not transport.connected()
    with pytest.raises(SendError) as info:
        transport.send(OTHER, "while down")
    assert info.value.code == "NOT_CONNECTED" and info.value.retryable
    proxy.fail = False
    events.wait_for("CONNECTED", after=failed_at)
    assert transport.connected()


def test_unreachable_proxy_is_proxy_failed(make_transport):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    transport, events = make_transport(proxy_url=f"socks5h://127.0.0.1:{dead_port}")
    transport.start()
    _, error = events.wait_for("ERROR", code="PROXY_FAILED")
    assert error["detail"]
    events.wait_for("ERROR", after=events.kinds().index("ERROR") + 1, code="PROXY_FAILED")  # retried
    assert transport.counters()["proxy_failures"] >= 2


def test_socks5_url_still_resolves_names_at_the_proxy(make_transport, sim, proxy):
    port = sim.wire.rsplit(":", 1)[1]
    url = proxy.url.replace("socks5h://", "socks5://")
    transport, events = make_transport(proxy_url=url, wire=f"localhost:{port}")
    transport.start()
    events.wait_for("QR")
    assert (proxy.requests[-1].atyp, proxy.requests[-1].host) == ("domain", "localhost")


def test_banned_is_terminal(make_transport, sim):
    transport, events = paired_transport(make_transport, sim)
    sim_post(sim, f"/sim/accounts/{PHONE}/ban")
    _, error = events.wait_for("ERROR", code="BANNED")
    assert error["detail"] == "manual"
    transport._thread.join(timeout=DEADLINE)
    assert not transport._thread.is_alive() and not transport.connected()
    assert "CONNECTION_LOST" not in [d.get("code") for k, d in events.events if k == "ERROR"]


def test_logged_out_deletes_creds_and_pairs_again(make_transport, sim, tmp_path):
    _, events = paired_transport(make_transport, sim)
    assert (tmp_path / "sess-1" / CREDS_FILE).exists()
    mark = len(events.events)
    sim_post(sim, f"/sim/accounts/{PHONE}/logout")
    out_at, _ = events.wait_for("ERROR", after=mark, code="LOGGED_OUT")
    events.wait_for("QR", after=out_at)
    assert not (tmp_path / "sess-1" / CREDS_FILE).exists()


def test_restriction_is_reported_and_fails_sends(make_transport, sim):
    transport, events = paired_transport(make_transport, sim)
    until = sim_post(sim, f"/sim/accounts/{PHONE}/restrict", seconds=300).json()["until"]
    _, restricted = events.wait_for("RESTRICTED")
    assert restricted["until"] == until and restricted["reason"]
    with pytest.raises(SendError) as info:
        transport.send(OTHER, "blocked")
    assert info.value.code == "RESTRICTED" and info.value.restricted_until == until
    assert [k for k in events.kinds() if k == "RESTRICTED"] == ["RESTRICTED"]  # reported once


def test_invalid_recipient_is_not_retryable(make_transport, sim):
    transport, _ = paired_transport(make_transport, sim)
    with pytest.raises(SendError) as info:
        transport.send("12ab", "x")
    assert (info.value.code, info.value.retryable) == ("INVALID_RECIPIENT", False)


def test_stream_replaced_stops_the_older_transport(make_transport, sim):
    older, events = paired_transport(make_transport, sim)
    newer, newer_events = make_transport()  # same session dir: it has the creds
    newer.start()
    newer_events.wait_for("CONNECTED")
    events.wait_for("ERROR", code="STREAM_REPLACED")
    older._thread.join(timeout=DEADLINE)
    assert not older._thread.is_alive() and newer.connected()


def test_keep_alive_declares_a_silent_server_dead(make_transport, proxy):
    # A wire endpoint that accepts and reads but never answers, like a half-dead network path.
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(4096):
                received.append(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        transport, events = make_transport(wire=f"127.0.0.1:{listener.getsockname()[1]}")
        transport.keepalive_interval, transport.keepalive_misses = 0.3, 3
        transport.start()
        _, error = events.wait_for("ERROR", code="CONNECTION_LOST")
        assert "keep-alive" in error["detail"]
        assert b'"op":"ping"' in b"".join(received)
    finally:
        listener.close()


def test_stop_is_idempotent(make_transport, sim):
    transport, _ = paired_transport(make_transport, sim)
    transport.stop()
    transport.stop()
    assert not transport.connected() and not transport._thread.is_alive()
    with pytest.raises(SendError):
        transport.send(OTHER, "after stop")


def test_rejects_a_non_socks_proxy_url_and_a_missing_phone(make_transport):
    transport, _ = make_transport(proxy_url="http://127.0.0.1:3128")
    with pytest.raises(ValueError, match="socks5"):
        transport.start()
    transport, _ = make_transport(phone="")
    with pytest.raises(ValueError, match="PHONE"):
        transport.start()
