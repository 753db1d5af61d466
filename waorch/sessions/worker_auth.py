"""Verifying signed requests from session workers: signature, freshness, replay, ownership."""

from __future__ import annotations

import json
from typing import Any

import redis

from waorch.core import keys, settings, signing
from waorch.sessions import registry as sessions


class WorkerAuthError(Exception):
    """The request is not from the session's own worker (or is stale, or replayed)."""


def verify_worker_request(r: redis.Redis, body: bytes, timestamp: str | None,
                          signature: str | None, path_session: str | None = None
                          ) -> tuple[dict, dict[str, Any]]:
    """The session and the parsed body of a genuine worker request, else WorkerAuthError."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WorkerAuthError("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("session_id"), str):
        raise WorkerAuthError("body lacks session_id")
    session_id = payload["session_id"]
    if path_session is not None and path_session != session_id:
        raise WorkerAuthError("session mismatch")
    session = sessions.get_session(r, session_id)
    if session is None:
        raise WorkerAuthError("unknown session")
    max_skew = settings.get().webhook_max_skew
    if not signing.verify(sessions.session_secret(session), timestamp, signature, body, max_skew):
        raise WorkerAuthError("bad or stale signature")
    # a signature is accepted once: replays inside the freshness window are refused
    if not r.set(keys.webhook_nonce(session_id, signature or ""), "1", nx=True, ex=2 * max_skew):
        raise WorkerAuthError("replayed request")
    return session, payload
