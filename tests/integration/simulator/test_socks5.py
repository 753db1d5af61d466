"""The SOCKS5 server against a real client (python-socks) and real target servers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import socketserver
import subprocess
import threading

import pytest
from python_socks import ProxyError
from python_socks.sync import Proxy

from tests.support.commands import WAORCH as _WAORCH
from waorch.simulator.socks5 import Socks5Server


class _EchoHandler(socketserver.BaseRequestHandler):
    """Echoes every byte; after the client half-closes, sends `bye:<peer ip>` and closes."""

    def handle(self) -> None:
        self.server.peers.append(self.client_address[0])
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
            self.request.sendall(f"bye:{self.client_address[0]}".encode())
            self.request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy cut the connection (drop_connections)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.peers: list[str] = []


@pytest.fixture
def echo():
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy():
    server = Socks5Server().start_in_thread()
    yield server
    server.stop()




def _client(url: str) -> Proxy:
    return Proxy.from_url(url.replace("socks5h://", "socks5://"), rdns=True)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_domain_destination_is_resolved_by_the_proxy(proxy, echo):
    sock = _client(proxy.url).connect("localhost", echo.server_address[1], timeout=10)
    sock.sendall(b"ping")
    sock.shutdown(socket.SHUT_WR)
    assert _read_all(sock) == b"pingbye:127.0.0.1"
    sock.close()
    request = proxy.requests[-1]
    assert (request.atyp, request.host, request.port) == ("domain", "localhost", echo.server_address[1])
    assert request.username is None


def test_ip_destination_is_recorded_as_ipv4(proxy, echo):
    sock = _client(proxy.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
    sock.close()
    assert proxy.requests[-1].atyp == "ipv4"
    assert proxy.requests[-1].host == "127.0.0.1"


def test_relays_large_payload_both_ways(proxy, echo):
    payload = os.urandom(3 * 1024 * 1024)
    sock = _client(proxy.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(sock)))
    reader.start()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    reader.join(timeout=60)
    sock.close()
    assert received and received[0] == payload + b"bye:127.0.0.1"


def test_credentials_are_required_and_checked(echo):
    server = Socks5Server(username="alice", password="s3cr:et@").start_in_thread()
    try:
        assert server.url == f"socks5h://alice:s3cr%3Aet%40@127.0.0.1:{server.port}"
        assert "s3cr" not in server.redacted_url
        anonymous = f"socks5://127.0.0.1:{server.port}"
        with pytest.raises(ProxyError):
            _client(anonymous).connect("127.0.0.1", echo.server_address[1], timeout=10)
        wrong = f"socks5://alice:nope@127.0.0.1:{server.port}"
        with pytest.raises(ProxyError):
            _client(wrong).connect("127.0.0.1", echo.server_address[1], timeout=10)
        assert server.requests == []  # nothing was asked before authentication
        sock = _client(server.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        sock.close()
        assert server.requests[-1].username == "alice"
    finally:
        server.stop()


def test_fail_refuses_new_connections_until_cleared(proxy, echo):
    proxy.fail = True
    with pytest.raises((ProxyError, OSError)):
        _client(proxy.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
    assert proxy.requests == []
    proxy.fail = False
    sock = _client(proxy.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
    sock.close()
    assert len(proxy.requests) == 1


def test_drop_connections_cuts_open_relays(proxy, echo):
    sock = _client(proxy.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
    sock.sendall(b"a")
    assert sock.recv(1) == b"a"
    proxy.drop_connections()
    sock.settimeout(10)
    try:
        leftover = sock.recv(100)
    except ConnectionResetError:
        leftover = b""
    assert leftover == b""  # the echo server never sent "bye": the relay was cut, not closed
    sock.close()


def test_refuse_connects_records_then_refuses(echo):
    server = Socks5Server(refuse_connects=True).start_in_thread()
    try:
        with pytest.raises(ProxyError) as info:
            _client(server.url).connect("example.invalid", 443, timeout=10)
        assert info.value.error_code == 0x05
        assert [(r.atyp, r.host, r.port) for r in server.requests] == [("domain", "example.invalid", 443)]
        assert echo.peers == []
    finally:
        server.stop()


def test_unreachable_destination_is_reported(proxy):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ProxyError) as info:
        _client(proxy.url).connect("127.0.0.1", closed_port, timeout=10)
    assert info.value.error_code == 0x05


def test_outbound_source_is_what_the_target_sees(echo):
    server = Socks5Server(host="127.0.0.3", outbound_source="127.0.0.3").start_in_thread()
    try:
        sock = _client(server.url).connect("127.0.0.1", echo.server_address[1], timeout=10)
        sock.shutdown(socket.SHUT_WR)
        assert _read_all(sock) == b"bye:127.0.0.3"
        sock.close()
        assert echo.peers == ["127.0.0.3"]
    finally:
        server.stop()


def test_start_and_close_inside_an_event_loop(echo):
    async def scenario() -> bytes:
        server = await Socks5Server().start()
        try:
            sock = await asyncio.to_thread(_client(server.url).connect, "127.0.0.1",
                                           echo.server_address[1], 10)
            sock.sendall(b"hi")
            sock.shutdown(socket.SHUT_WR)
            data = await asyncio.to_thread(_read_all, sock)
            sock.close()
            return data
        finally:
            await server.close()

    assert asyncio.run(scenario()) == b"hibye:127.0.0.1"


def test_stop_is_idempotent_and_frees_the_port():
    server = Socks5Server().start_in_thread()
    port = server.port
    server.stop()
    server.stop()
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(5)
        probe.connect(("127.0.0.1", port))


def test_cli_runs_proxies_and_redacts_passwords(echo):
    env = {**os.environ, "WAORCH_SOCKS_PASSWORD": "hunter2"}
    with subprocess.Popen(
        [*_WAORCH, "socks", "--listen", "127.0.0.4:0",
         "--listen", "127.0.0.5:0", "--user", "u"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            lines = [process.stdout.readline() for _ in range(2)]
            assert all(line.startswith("socks5h://u:***@127.0.0.") for line in lines), lines
            assert "hunter2" not in "".join(lines)
            port = int(lines[1].strip().rsplit(":", 1)[1])
            sock = _client(f"socks5://u:hunter2@127.0.0.5:{port}").connect(
                "127.0.0.1", echo.server_address[1], timeout=10)
            sock.shutdown(socket.SHUT_WR)
            assert _read_all(sock) == b"bye:127.0.0.5"
            sock.close()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "hunter2" not in process.stderr.read()


def test_cli_rejects_a_bad_listen_address():
    result = subprocess.run([*_WAORCH, "socks", "--listen", "nope"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "host:port" in result.stderr
    assert "Traceback" not in result.stderr

