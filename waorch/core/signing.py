"""HMAC-SHA256 request signing shared by workers, the gateway and client webhooks."""

from __future__ import annotations

import hashlib
import hmac
import time


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC of "<timestamp>.<body>">`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(secret: str, body: bytes, prefix: str = "X-", now: float | None = None) -> dict:
    """Headers `<prefix>Timestamp` and `<prefix>Signature` for `body`."""
    ts = str(int(now if now is not None else time.time()))
    return {f"{prefix}Timestamp": ts, f"{prefix}Signature": signature(secret, ts, body)}


def verify(secret: str, timestamp: str | None, sig: str | None, body: bytes,
           max_skew: float, now: float | None = None) -> bool:
    """True when `sig` is right for body and timestamp, and the timestamp is fresh."""
    if not timestamp or not sig:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    current = now if now is not None else time.time()
    if abs(current - ts) > max_skew:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), sig)


def derive_secret(master: str, purpose: str) -> str:
    """A stable secret for `purpose` (e.g. one session) derived from the master key."""
    return hmac.new(master.encode(), purpose.encode(), hashlib.sha256).hexdigest()
