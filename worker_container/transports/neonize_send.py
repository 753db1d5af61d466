"""Sending through neonize: recipients, media specs and what a send error means for waorch.

Pure functions except `fetch_media`, which reads a file of the session volume or downloads a URL
through the session's proxy (never directly: the worker's own address must not show).
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker_container.transports.base import SendError

NOT_CONNECTED = "NOT_CONNECTED"
INVALID_RECIPIENT = "INVALID_RECIPIENT"
INVALID_MEDIA = "INVALID_MEDIA"
MEDIA_UNSUPPORTED = "MEDIA_UNSUPPORTED"
MEDIA_FETCH_FAILED = "MEDIA_FETCH_FAILED"
SEND_UNCERTAIN = "SEND_UNCERTAIN"
SEND_FAILED = "SEND_FAILED"
RESTRICTED = "RESTRICTED"

MAX_MEDIA_BYTES = 64 * 1024 * 1024
MEDIA_KINDS = ("image", "document", "video", "audio")
_FFMPEG_KINDS = {"video", "audio"}  # neonize probes duration/thumbnail with ffmpeg for these

# WhatsApp's own restriction signals as whatsmeow words them in send errors.
_RESTRICTIONS = (
    (re.compile(r"reach.?out|time.?lock", re.I), "reach_out_timelock"),
    (re.compile(r"capping|\bcap(ped)?\b|quota", re.I), "message_capping"),
    (re.compile(r"\b463\b"), "send_error_463"),
    (re.compile(r"rate-overlimit|\b429\b", re.I), "rate_overlimit"),
)
# The message may have left: whatsmeow gave up waiting for WhatsApp's ack. Retrying could
# deliver it twice, which at-most-once forbids.
_UNCERTAIN = re.compile(r"timed out|deadline exceeded|timeout", re.I)
_NOT_CONNECTED = re.compile(r"not connected|not logged in|client is nil|doesn't contain a device JID|"
                            r"websocket (is )?(closed|disconnected)", re.I)


@dataclass(frozen=True)
class MediaSpec:
    kind: str  # image | document | video | audio
    url: str
    path: str
    mimetype: str
    caption: str
    filename: str


def recipient_digits(to: str) -> str:
    """E.164 digits of `to` ("+49 151..." is accepted); SendError INVALID_RECIPIENT otherwise."""
    digits = re.sub(r"[\s\-()]", "", str(to or "")).removeprefix("+")
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        raise SendError(INVALID_RECIPIENT, f"recipient {to!r} is not a phone number", retryable=False)
    return digits


def media_spec(media: dict[str, Any], text: str = "") -> MediaSpec:
    """Validate a message's `media` object: {type?, url | path, mimetype?, caption?, filename?}."""
    if not isinstance(media, dict):
        raise SendError(INVALID_MEDIA, "media must be an object", retryable=False)
    url = str(media.get("url") or "")
    path = str(media.get("path") or "")
    if bool(url) == bool(path):
        raise SendError(INVALID_MEDIA, "media needs exactly one of url or path", retryable=False)
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise SendError(INVALID_MEDIA, "media url must be http(s)", retryable=False)
    name = str(media.get("filename") or os.path.basename(urlsplit(url).path if url else path))
    mimetype = str(media.get("mimetype") or media.get("mime_type") or mimetypes.guess_type(name)[0] or "")
    kind = str(media.get("type") or _kind_of(mimetype))
    if kind not in MEDIA_KINDS:
        raise SendError(INVALID_MEDIA, f"media type {kind!r} is not one of {', '.join(MEDIA_KINDS)}",
                        retryable=False)
    caption = str(media.get("caption") if media.get("caption") is not None else text or "")
    return MediaSpec(kind=kind, url=url, path=path, mimetype=mimetype, caption=caption, filename=name)


def _kind_of(mimetype: str) -> str:
    major = mimetype.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "document"


def require_media_tools(kind: str) -> None:
    """SendError MEDIA_UNSUPPORTED when neonize needs ffmpeg/ffprobe for `kind` and they are missing."""
    if kind in _FFMPEG_KINDS and not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        raise SendError(MEDIA_UNSUPPORTED, f"{kind} messages need ffmpeg and ffprobe on PATH in the worker "
                                           "(the production image has them)", retryable=False)


def fetch_media(spec: MediaSpec, session_dir: str, proxy_url: str, max_bytes: int = MAX_MEDIA_BYTES) -> bytes:
    """The media's bytes: a file inside the session volume, or a URL fetched through the proxy."""
    if spec.path:
        return _read_session_file(spec.path, session_dir, max_bytes)
    import requests  # noqa: PLC0415 - only workers that send media pay for it

    proxies = {"http": proxy_url, "https": proxy_url} if proxy_url else {"http": "", "https": ""}
    try:
        with requests.Session() as http:
            http.trust_env = False  # never a proxy from the environment, never .netrc credentials
            with http.get(spec.url, proxies=proxies, timeout=(15, 60), stream=True) as resp:
                if resp.status_code != 200:
                    raise SendError(MEDIA_FETCH_FAILED, f"media url answered HTTP {resp.status_code}",
                                    retryable=resp.status_code >= 500)
                chunks, size = [], 0
                for chunk in resp.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SendError(INVALID_MEDIA, f"media is larger than {max_bytes} bytes",
                                        retryable=False)
                    chunks.append(chunk)
                return b"".join(chunks)
    except requests.RequestException as exc:
        raise SendError(MEDIA_FETCH_FAILED, f"could not fetch media: {type(exc).__name__}") from None


def _read_session_file(path: str, session_dir: str, max_bytes: int) -> bytes:
    # Only the session's own volume: a message must not be able to exfiltrate worker files.
    root = os.path.realpath(session_dir)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root or not os.path.isfile(full):
        raise SendError(INVALID_MEDIA, "media path must name a file inside the session volume",
                        retryable=False)
    if os.path.getsize(full) > max_bytes:
        raise SendError(INVALID_MEDIA, f"media is larger than {max_bytes} bytes", retryable=False)
    with open(full, "rb") as fh:
        return fh.read()


def restriction_of(error_text: str) -> str | None:
    """The RESTRICTED reason WhatsApp signals in a send error, or None."""
    for pattern, reason in _RESTRICTIONS:
        if pattern.search(error_text or ""):
            return reason
    return None


def classify_send_error(error_text: str) -> SendError:
    """The SendError for a failed neonize send (error text as whatsmeow words it)."""
    text = (error_text or "").strip() or "unknown send error"
    reason = restriction_of(text)
    if reason is not None:
        # WhatsApp gives no end time in these errors; the orchestrator pauses the session.
        return SendError(RESTRICTED, f"{reason}: {text}", retryable=False, restricted_until=None)
    if _NOT_CONNECTED.search(text):
        return SendError(NOT_CONNECTED, text, retryable=True)
    if _UNCERTAIN.search(text):
        return SendError(SEND_UNCERTAIN, f"no ack from WhatsApp, the message may have been sent: {text}",
                         retryable=False)
    return SendError(SEND_FAILED, text, retryable=True)
