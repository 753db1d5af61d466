"""neonize transport: recipients, media specs, media files, and what send errors mean."""

from __future__ import annotations

from email.message import Message

import pytest

from tests.support.local_http import LocalHttpServer, Reply
from worker_container.transports.base import SendError
from worker_container.transports.neonize_send import (
    INVALID_MEDIA,
    INVALID_RECIPIENT,
    MEDIA_FETCH_FAILED,
    MEDIA_UNSUPPORTED,
    NOT_CONNECTED,
    RESTRICTED,
    SEND_FAILED,
    SEND_UNCERTAIN,
    classify_send_error,
    fetch_media,
    media_spec,
    recipient_digits,
    require_media_tools,
    restriction_of,
)


@pytest.mark.parametrize("to, digits", [("4915112345678", "4915112345678"),
                                        ("+49 151 1234-5678", "4915112345678"),
                                        ("+1 (555) 010-9999", "15550109999")])
def test_recipient_digits(to: str, digits: str) -> None:
    assert recipient_digits(to) == digits


@pytest.mark.parametrize("to", ["", "abc", "49151@s.whatsapp.net", "123", "1" * 16, None])
def test_bad_recipients_are_not_retryable(to) -> None:
    with pytest.raises(SendError) as info:
        recipient_digits(to)
    assert info.value.code == INVALID_RECIPIENT and info.value.retryable is False


@pytest.mark.parametrize("text, reason", [
    ("server returned error 463", "send_error_463"),
    ("failed to send: 463 tos", "send_error_463"),
    ("account reachout timelock active", "reach_out_timelock"),
    ("reach-out time-lock until ...", "reach_out_timelock"),
    ("message capping: monthly quota exceeded", "message_capping"),
    ("info query returned status 429: rate-overlimit", "rate_overlimit"),
])
def test_whatsapp_restrictions_are_restricted_and_not_retried(text: str, reason: str) -> None:
    assert restriction_of(text) == reason
    error = classify_send_error(text)
    assert error.code == RESTRICTED and error.retryable is False and error.detail.startswith(reason)


@pytest.mark.parametrize("text", ["websocket not connected", "client is nil", "not logged in",
                                  "the store doesn't contain a device JID"])
def test_not_connected_is_retryable(text: str) -> None:
    error = classify_send_error(text)
    assert error.code == NOT_CONNECTED and error.retryable is True


@pytest.mark.parametrize("text", ["timed out waiting for message send response", "context deadline exceeded"])
def test_a_send_without_ack_is_never_retried(text: str) -> None:
    # The message may be out; a retry could send it twice (at most once per message id).
    error = classify_send_error(text)
    assert error.code == SEND_UNCERTAIN and error.retryable is False


def test_other_errors_are_retryable_send_failures() -> None:
    error = classify_send_error("failed to get device list: something")
    assert error.code == SEND_FAILED and error.retryable is True
    assert not restriction_of("error 4630 in 14634")  # 463 only as a word
    assert classify_send_error("").detail == "unknown send error"


def test_media_spec_from_url_infers_kind_and_caption() -> None:
    spec = media_spec({"url": "https://cdn.example/pics/cat.png"}, text="a cat")
    assert (spec.kind, spec.mimetype, spec.caption) == ("image", "image/png", "a cat")
    assert spec.filename == "cat.png"
    spec = media_spec({"path": "media/report.pdf", "caption": "Q3", "filename": "Q3.pdf"})
    assert (spec.kind, spec.mimetype, spec.caption) == ("document", "application/pdf", "Q3")
    assert spec.filename == "Q3.pdf"
    spec = media_spec({"url": "https://x.example/blob", "mimetype": "video/mp4"})
    assert spec.kind == "video"
    spec = media_spec({"url": "https://x.example/blob", "type": "document", "mime_type": "text/csv"})
    assert (spec.kind, spec.mimetype) == ("document", "text/csv")


@pytest.mark.parametrize("media, words", [
    ({}, "exactly one"),
    ({"url": "https://a/b", "path": "c"}, "exactly one"),
    ({"url": "file:///etc/passwd"}, "http(s)"),
    ({"url": "https://a/b.png", "type": "sticker"}, "not one of"),
    ("https://a/b.png", "object"),
])
def test_bad_media_is_not_retryable(media, words: str) -> None:
    with pytest.raises(SendError) as info:
        media_spec(media)
    assert info.value.code == INVALID_MEDIA and not info.value.retryable and words in info.value.detail


def test_video_and_audio_need_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    for kind in ("video", "audio"):
        with pytest.raises(SendError) as info:
            require_media_tools(kind)
        assert info.value.code == MEDIA_UNSUPPORTED and info.value.retryable is False
        assert "ffmpeg" in info.value.detail
    require_media_tools("image")  # PIL makes the thumbnail; no ffmpeg needed
    require_media_tools("document")
    for tool in ("ffmpeg", "ffprobe"):
        exe = tmp_path / tool
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    require_media_tools("video")


def test_media_paths_are_confined_to_the_session_volume(tmp_path) -> None:
    session = tmp_path / "sessions" / "s1"
    (session / "media").mkdir(parents=True)
    (session / "media" / "a.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "secret.txt").write_text("no")
    assert fetch_media(media_spec({"path": "media/a.pdf"}), str(session), "") == b"%PDF-1.4"
    for path in ("../../secret.txt", str(tmp_path / "secret.txt"), "media", "missing.pdf"):
        with pytest.raises(SendError) as info:
            fetch_media(media_spec({"path": path, "type": "document"}), str(session), "")
        assert info.value.code == INVALID_MEDIA
    with pytest.raises(SendError) as info:
        fetch_media(media_spec({"path": "media/a.pdf"}), str(session), "", max_bytes=3)
    assert "larger" in info.value.detail


class _Files(LocalHttpServer):
    methods = ("GET",)

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        if path == "/ok.png":
            return 200, {}, b"\x89PNG" + b"x" * 100
        return (404 if path == "/missing" else 503), {}, b""


@pytest.fixture
def file_server():
    with _Files() as server:
        yield server.url


def test_media_urls_are_fetched_through_the_proxy(file_server: str) -> None:
    from waorch.simulator.socks5 import Socks5Server

    proxy = Socks5Server(username="u", password="pw").start_in_thread()
    try:
        data = fetch_media(media_spec({"url": f"{file_server}/ok.png"}), "/nonexistent", proxy.url)
        assert data.startswith(b"\x89PNG") and len(data) == 104
        assert [(r.atyp, r.host, r.username) for r in proxy.requests] == [("ipv4", "127.0.0.1", "u")]
        with pytest.raises(SendError) as info:
            fetch_media(media_spec({"url": f"{file_server}/missing", "type": "image"}), "/x", proxy.url)
        assert info.value.code == MEDIA_FETCH_FAILED and info.value.retryable is False
        with pytest.raises(SendError) as info:
            fetch_media(media_spec({"url": f"{file_server}/busy", "type": "image"}), "/x", proxy.url)
        assert info.value.retryable is True
        with pytest.raises(SendError) as info:
            fetch_media(media_spec({"url": f"{file_server}/ok.png"}), "/x", proxy.url, max_bytes=10)
        assert info.value.code == INVALID_MEDIA
    finally:
        proxy.stop()


def test_media_fetch_through_a_dead_proxy_fails_cleanly(file_server: str) -> None:
    with pytest.raises(SendError) as info:
        fetch_media(media_spec({"url": f"{file_server}/ok.png"}), "/x", "socks5h://127.0.0.1:1")
    assert info.value.code == MEDIA_FETCH_FAILED and info.value.retryable is True


def test_media_host_names_are_resolved_by_the_proxy() -> None:
    from waorch.simulator.socks5 import Socks5Server

    proxy = Socks5Server(refuse_connects=True).start_in_thread()
    try:
        with pytest.raises(SendError):
            fetch_media(media_spec({"url": "https://media.example.invalid/a.png"}), "/x", proxy.url)
        requests = [(r.atyp, r.host, r.port) for r in proxy.requests]
        assert requests == [("domain", "media.example.invalid", 443)]
    finally:
        proxy.stop()
