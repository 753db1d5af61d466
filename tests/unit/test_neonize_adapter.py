"""NeonizeTransport without a network: refusals, profile, event handling, sends, pairing code.

Everything here runs against the real neonize library offline (a NewClient that never connects);
connecting is covered by tests/integration/worker/test_neonize_proxy.py through a local SOCKS5 server.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from worker_container.transports.base import SendError, TransportConfig
from worker_container.transports.neonize_adapter import (
    BACKOFF_MAX,
    NeonizeStartError,
    NeonizeTransport,
    backoff_delay,
    device_props,
    is_proxy_error,
    load_neonize,
    pair_phone,
)
from worker_container.transports.neonize_profile import device_profile

ROOT = Path(__file__).resolve().parents[2]
pb = pytest.importorskip("neonize.proto.Neonize_pb2")


class Events:
    """Thread-safe record of what a transport emitted."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self.cond = threading.Condition()

    def __call__(self, event: str, data: dict) -> None:
        with self.cond:
            self.items.append((event, data))
            self.cond.notify_all()

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [d for e, d in self.items if e == event]
                if found:
                    return found[0]
                if not self.cond.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise AssertionError(f"no {event} event; got {self.items}")

    def names(self) -> list[str]:
        with self.cond:
            return [e for e, _ in self.items]


def config(tmp_path: Path, **changes) -> TransportConfig:
    values = dict(session_id="unit1", phone="4915100000001", proxy_url="socks5h://u:pw@127.0.0.1:1",
                  session_dir=str(tmp_path / "sessions" / "unit1"), keep_alive=False)
    values.update(changes)
    return TransportConfig(**values)


@pytest.fixture
def offline(tmp_path):
    """A transport wired to a real, never-connected neonize client (start() would connect)."""
    emitted = Events()
    transport = NeonizeTransport(config(tmp_path), emitted)
    transport._nz = load_neonize()
    transport._profile = device_profile({"platform": "FIREFOX", "os": "Linux"})
    from worker_container.transports.neonize_proxy import choose_proxy

    transport._proxy = choose_proxy(transport.config.proxy_url)
    Path(transport.config.session_dir).mkdir(parents=True)
    transport._client = transport._new_client()
    yield transport, emitted
    transport.stop()


# ----- refusing to start ---------------------------------------------------------------------

@pytest.mark.parametrize("proxy_url, words", [("", "PROXY_URL is empty"), ("socks4://u:pw@h:1080", "socks4")])
def test_start_refuses_a_missing_or_leaky_proxy(tmp_path, monkeypatch, proxy_url: str, words: str) -> None:
    monkeypatch.delenv("WAORCH_ALLOW_NO_PROXY", raising=False)
    emitted = Events()
    transport = NeonizeTransport(config(tmp_path, proxy_url=proxy_url), emitted)
    with pytest.raises(NeonizeStartError) as info:
        transport.start()
    assert info.value.code == "CONFIG_INVALID"
    [(event, data)] = emitted.items
    assert event == "ERROR" and data["code"] == "CONFIG_INVALID" and words in data["detail"]
    assert "pw@" not in data["detail"]
    assert transport._client is None and not Path(transport.config.session_dir).exists()


def test_refusal_happens_before_the_go_library_is_loaded() -> None:
    code = """
import sys
from worker_container.transports.base import TransportConfig
from worker_container.transports.neonize_adapter import NeonizeTransport, NeonizeStartError
events = []
cfg = TransportConfig("s", "49151", "socks4://h:1080", "/nonexistent/s")
t = NeonizeTransport(cfg, lambda e, d: events.append(e))
try:
    t.start()
except NeonizeStartError as exc:
    print(exc.code, events, "neonize" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.split() == ["CONFIG_INVALID", "['ERROR']", "False"], out.stderr


def _run_start_with_fake_neonize(tmp_path: Path, with_library: bool) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake" / "neonize"
    fake.mkdir(parents=True)
    from worker_container.transports.neonize_adapter import native_library_name

    if with_library:
        (fake / native_library_name()).write_bytes(b"not an ELF file")
        (fake / "__init__.py").write_text(
            "import ctypes, os\n"
            f"ctypes.CDLL(os.path.join(os.path.dirname(__file__), {native_library_name()!r}))\n")
    else:
        (fake / "__init__.py").write_text("raise RuntimeError('would download from GitHub')\n")
    code = f"""
import json
from worker_container.transports.base import TransportConfig
from worker_container.transports.neonize_adapter import NeonizeTransport, NeonizeStartError
events = []
t = NeonizeTransport(TransportConfig("s", "49151", "socks5h://127.0.0.1:1", {str(tmp_path / "s")!r}),
                     lambda e, d: events.append([e, d]))
try:
    t.start()
except NeonizeStartError as exc:
    print(json.dumps(events))
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path / 'fake'}:{ROOT}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_missing_native_library_is_transport_unavailable_without_a_download(tmp_path) -> None:
    out = _run_start_with_fake_neonize(tmp_path, with_library=False)
    [[event, data]] = json.loads(out.stdout)
    assert event == "ERROR" and data["code"] == "TRANSPORT_UNAVAILABLE"
    assert "native library is missing" in data["detail"]
    assert "would download" not in out.stdout + out.stderr  # neonize's package was never imported


def test_a_library_that_cannot_load_is_transport_unavailable(tmp_path) -> None:
    out = _run_start_with_fake_neonize(tmp_path, with_library=True)
    [[event, data]] = json.loads(out.stdout)
    assert event == "ERROR" and data["code"] == "TRANSPORT_UNAVAILABLE"
    assert "cannot load neonize's native library: OSError" in data["detail"]


# ----- profile -------------------------------------------------------------------------------

def test_every_inventory_profile_becomes_valid_device_props() -> None:
    nz = load_neonize()
    inventory = json.loads((ROOT / "waorch" / "device_profiles.json").read_text())["profiles"]
    for entry in inventory:
        profile = device_profile(entry)
        props = device_props(nz, profile)
        assert props.os == entry["os"]
        assert nz.DeviceProps.PlatformType.Name(props.platformType) == entry["platform"]
        assert nz.ClientType[profile.pair_client_type]  # a valid PairPhone client type
        assert profile.pair_display_name == entry["device_name"]


def test_profile_defaults_and_fallbacks() -> None:
    p = device_profile({})
    assert (p.os, p.platform_type, p.pair_display_name, p.pair_with_code) == (
        "Windows", "CHROME", "Chrome (Windows)", False)
    p = device_profile({"browser": "Firefox", "os": "Ubuntu", "pair_with_code": "true"})
    assert (p.platform_type, p.pair_client_type, p.pair_display_name, p.pair_with_code) == (
        "FIREFOX", "FIREFOX", "Firefox (Ubuntu)", True)
    assert device_profile({"platform": "DESKTOP"}).pair_client_type == "ELECTRON"
    assert device_profile({"platform": "NOPE", "browser": "Opera"}).platform_type == "OPERA"
    assert device_profile({}, pair_with_code_env="1").pair_with_code


def test_the_client_carries_the_profile(offline) -> None:
    transport, _ = offline
    props = transport._client.device_props
    assert props.os == "Linux"
    assert transport._nz.DeviceProps.PlatformType.Name(props.platformType) == "FIREFOX"
    assert transport._client.name == str(Path(transport.config.session_dir) / "whatsmeow.sqlite3")
    assert transport._client.uuid == b"unit1"


# ----- events --------------------------------------------------------------------------------

def test_connection_events_and_one_error_per_outage(offline) -> None:
    transport, emitted = offline
    client = transport._client
    assert not transport.connected()
    transport._on_event(client, pb.Connected(status=True))
    assert transport.connected() and emitted.items[-1] == ("CONNECTED", {"jid": "4915100000001"})
    transport._on_event(client, pb.Disconnected(status=True))
    transport._on_event(client, pb.KeepAliveTimeout(ErrorCount=2))
    transport._on_event(client, pb.Disconnected(status=True))
    assert not transport.connected()
    assert emitted.names() == ["CONNECTED", "ERROR"]  # whatsmeow reconnects; one report per outage
    transport._on_event(client, pb.KeepAliveRestored())
    assert transport.connected()
    transport._on_event(client, pb.KeepAliveTimeout(ErrorCount=1))
    assert emitted.names() == ["CONNECTED", "ERROR", "CONNECTED", "ERROR"]


@pytest.mark.parametrize("event, code", [
    (pb.LoggedOut(OnConnect=False, Reason=pb.LOGGED_OUT), "LOGGED_OUT"),
    (pb.TemporaryBan(Code=pb.TemporaryBan.BLOCKED_BY_USERS, Expire=60), "BANNED"),
    (pb.ConnectFailure(Reason=pb.TEMP_BANNED), "BANNED"),
    (pb.StreamReplaced(), "STREAM_REPLACED"),
])
def test_fatal_events_stop_the_session_for_good(offline, event, code: str) -> None:
    transport, emitted = offline
    transport._on_event(transport._client, pb.Connected(status=True))
    transport._on_event(transport._client, event)
    assert emitted.items[-1][1]["code"] == code
    assert not transport.connected() and transport.counters()["fatal"] == code
    transport._on_event(transport._client, pb.Connected(status=True))  # a late event does not revive it
    assert not transport.connected()
    with pytest.raises(SendError) as info:
        transport.send("4915100000002", "hi")
    assert info.value.code == "NOT_CONNECTED"


def test_receipts_and_inbound_are_forwarded(offline) -> None:
    transport, emitted = offline
    src = pb.MessageSource(Chat=pb.JID(User="49151", Server="s.whatsapp.net"),
                           Sender=pb.JID(User="49151", Server="s.whatsapp.net"))
    transport._on_event(transport._client, pb.Receipt(MessageSource=src, MessageIDs=["3EB0X"],
                                                      Type=pb.Receipt.READ, Timestamp=1_700_000_000))
    assert emitted.items == [("MESSAGE_STATUS", {"wa_id": "3EB0X", "status": "read", "at": 1_700_000_000.0,
                                                 "by": "49151"})]


def test_a_broken_event_never_raises_into_go(offline) -> None:
    transport, emitted = offline
    transport._on_event(transport._client, object())  # no DESCRIPTOR: logged, swallowed
    assert emitted.items == []


# ----- QR and pairing code -------------------------------------------------------------------

def test_qr_codes_are_emitted(offline) -> None:
    transport, emitted = offline
    transport._on_qr(transport._client, b"2@abc,def,ghi")
    assert emitted.items == [("QR", {"qr": "2@abc,def,ghi"})]


def test_pairing_code_mode_requests_one_code_instead_of_qr(offline) -> None:
    transport, emitted = offline
    transport._profile = device_profile({"platform": "SAFARI", "os": "Mac OS", "browser": "Safari"}, "true")
    transport._on_qr(transport._client, b"2@first")
    transport._on_qr(transport._client, b"2@second")  # QR rotation must not request a second code
    # Offline, whatsmeow refuses the request; the failure still comes back as a clean event.
    data = emitted.wait_for("ERROR")
    assert data["code"] == "PAIRING_FAILED" and "client is nil" in data["detail"]
    assert emitted.names() == ["ERROR"]


def test_pair_phone_reaches_whatsmeow_with_the_profile_name(offline) -> None:
    transport, _ = offline
    profile = device_profile({"device_name": "Safari (Mac OS)", "platform": "SAFARI", "os": "Mac OS"})
    with pytest.raises(transport._nz.NeonizeError, match="client is nil"):
        pair_phone(transport._nz, transport._client, "4915100000001", profile)


# ----- sending -------------------------------------------------------------------------------

def test_send_before_login_is_a_retryable_not_connected(offline) -> None:
    transport, _ = offline
    with pytest.raises(SendError) as info:
        transport.send("4915100000002", "hi")
    assert (info.value.code, info.value.retryable) == ("NOT_CONNECTED", True)


def test_send_error_from_whatsmeow_is_classified(offline) -> None:
    transport, _ = offline
    transport._on_event(transport._client, pb.Connected(status=True))  # flag says linked; Go says no
    with pytest.raises(SendError) as info:
        transport.send("+49 151 0000 0002", "hi")
    assert (info.value.code, info.value.retryable) == ("NOT_CONNECTED", True)
    with pytest.raises(SendError) as info:
        transport.send("not-a-number", "hi")
    assert info.value.code == "INVALID_RECIPIENT"


def test_whatsapp_restriction_emits_restricted(offline) -> None:
    transport, emitted = offline
    error = transport._send_failed("server returned error 463 (proxy socks5://u:pw@h:1)")
    assert error.code == "RESTRICTED" and error.retryable is False and "pw" not in error.detail
    [(event, data)] = emitted.items
    assert event == "RESTRICTED" and data["reason"] == "send_error_463" and data["until"] is None
    assert transport.counters()["restricted"] == 1


def test_media_send_checks_run_before_anything_is_uploaded(offline, monkeypatch, tmp_path) -> None:
    transport, _ = offline
    transport._on_event(transport._client, pb.Connected(status=True))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SendError) as info:
        transport.send("4915100000002", "", {"url": "https://x.example/v.mp4"})
    assert info.value.code == "MEDIA_UNSUPPORTED" and not info.value.retryable
    with pytest.raises(SendError) as info:
        transport.send("4915100000002", "", {"path": "../../etc/passwd", "type": "document"})
    assert info.value.code == "INVALID_MEDIA"


# ----- helpers -------------------------------------------------------------------------------

def test_backoff_doubles_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, rng) for n in range(12)]
    assert 1.6 <= delays[0] <= 2.4 and 3.2 <= delays[1] <= 4.8
    assert all(d <= BACKOFF_MAX * 1.2 for d in delays) and delays[-1] >= BACKOFF_MAX * 0.8


def test_is_proxy_error() -> None:
    assert is_proxy_error('Get "https://web.whatsapp.com/ws/chat": socks connect tcp 127.0.0.1:1->'
                          'web.whatsapp.com:443: dial tcp 127.0.0.1:1: connect: connection refused')
    assert is_proxy_error("proxyconnect tcp: dial tcp 10.0.0.1:3128: i/o timeout")
    assert not is_proxy_error("websocket: close 1006 (abnormal closure)")


def test_stop_is_safe_twice_and_before_start(tmp_path) -> None:
    transport = NeonizeTransport(config(tmp_path), Events())
    transport.stop()
    transport.stop()
    assert not transport.connected()
