"""Which media descriptions the simulated network accepts in a message (it carries no bytes)."""

from __future__ import annotations

import re
from typing import Any

MIB = 1024 * 1024
# Largest size per kind, as WhatsApp's clients enforce them (documents are allowed far more).
MAX_SIZE = {"image": 16 * MIB, "video": 16 * MIB, "audio": 16 * MIB, "ptt": 16 * MIB,
            "document": 100 * MIB}
# The mimetype family each kind needs; a document may be anything.
FAMILY = {"image": "image/", "video": "video/", "audio": "audio/", "ptt": "audio/"}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def media_problem(media: Any) -> tuple[str, str] | None:
    """(code, detail) when `media` cannot be sent, else None.

    A description without `kind` is accepted as before (older clients send only url/mimetype).
    """
    if media is None:
        return None
    if not isinstance(media, dict):
        return "INVALID_MEDIA", "media must be an object"
    kind = media.get("kind")
    if kind is None:
        return None
    if kind not in MAX_SIZE:
        return "INVALID_MEDIA", f"kind must be one of {', '.join(sorted(MAX_SIZE))}"
    mimetype, size = media.get("mimetype"), media.get("size")
    if mimetype is not None and (not isinstance(mimetype, str) or "/" not in mimetype):
        return "INVALID_MEDIA", "mimetype must be a type/subtype string"
    if isinstance(mimetype, str) and kind in FAMILY and not mimetype.startswith(FAMILY[kind]):
        return "INVALID_MEDIA", f"a {kind} needs a {FAMILY[kind]}* mimetype, not {mimetype}"
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        return "INVALID_MEDIA", "size must be a non-negative integer (bytes)"
    if isinstance(size, int) and size > MAX_SIZE[kind]:
        return "MEDIA_TOO_LARGE", f"a {kind} may be at most {MAX_SIZE[kind]} bytes, not {size}"
    filename, sha256 = media.get("filename"), media.get("sha256")
    if filename is not None and (not isinstance(filename, str) or not 0 < len(filename) <= 255):
        return "INVALID_MEDIA", "filename must be a string of 1 to 255 characters"
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        return "INVALID_MEDIA", "sha256 must be 64 hex digits"
    return None
