"""Message records: reading, listing and retention (acceptance is waorch.sending.accept)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Literal, TypedDict, get_args

import redis

from waorch.core import keys, lua, zset_pages

MessageStatus = Literal["queued", "routed", "scheduled", "claimed", "sent", "delivered", "read", "failed"]
FailReason = Literal["no_session", "suppressed", "invalid_recipient", "expired", "send_error", "session_lost"]
STATES: tuple[MessageStatus, ...] = get_args(MessageStatus)
TERMINAL: frozenset[MessageStatus] = frozenset({"sent", "delivered", "read", "failed"})
FAIL_REASONS: tuple[FailReason, ...] = get_args(FailReason)


# What the API shows of a message (GET /api/messages/{id} adds its `history`); "from" is a keyword
MessageView = TypedDict("MessageView", {
    "id": str, "status": MessageStatus, "reason": str | None, "to": str, "from": str | None,
    "session": str | None, "text": str, "media": dict[str, Any] | None, "client_ref": str | None,
    "wa_id": str | None, "attempts": int, "created_at": float | None, "updated_at": float | None,
    "scheduled_for": float | None, "expires_at": float | None, "tenant": str,
})


def history(r: redis.Redis, msg_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in r.lrange(keys.message_history(msg_id), 0, -1)]


def get_message(r: redis.Redis, msg_id: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The public view of one message with its history; None when unknown or another tenant's."""
    record = r.hgetall(keys.message(msg_id))
    if not record or (tenant is not None and record.get("tenant") != tenant):
        return None
    view = public_view(record)
    view["history"] = history(r, msg_id)
    return view


def _number(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def public_view(record: dict[str, str]) -> MessageView:
    media = record.get("media")
    return {
        "id": record["id"],
        "status": record.get("status"),
        "reason": record.get("reason") or None,
        "to": record.get("to"),
        "from": record.get("sender") or record.get("from_requested") or None,
        "session": record.get("session") or None,
        "text": record.get("text", ""),
        "media": json.loads(media) if media else None,
        "client_ref": record.get("client_ref") or None,
        "wa_id": record.get("wa_id") or None,
        "attempts": int(record.get("attempts") or 0),
        "created_at": _number(record.get("created_at")),
        "updated_at": _number(record.get("updated_at")),
        "scheduled_for": _number(record.get("scheduled_for")),
        "expires_at": _number(record.get("expires_at")),
        "tenant": record.get("tenant"),
    }  # type: ignore[typeddict-item]  # the record's fields are strings checked by the Lua that wrote them


PRUNE = lua.Script("messages/prune", keys=("all_messages",), args=("cutoff", "offset", "batch"))
SCAN_LIMIT = 5000  # index entries one listing request examines at most


def list_messages(r: redis.Redis, tenant: str | None, status: str | None = None,
                  session: str | None = None, cursor: str | None = None, limit: int = 50,
                  to: str | None = None,
                  scan_limit: int = SCAN_LIMIT) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `cursor` is the opaque value returned by the previous page.

    With filters, a page may hold fewer than `limit` items (even none) and still a cursor: one
    request examines at most `scan_limit` messages, so a rare filter costs bounded work per page."""
    index = keys.tenant_messages(tenant) if tenant else keys.MESSAGES_ALL
    entries = zset_pages.newest_first(r, index, cursor)
    wanted = {"status": status, "session": session, "to": to}
    wanted = {field: value for field, value in wanted.items() if value}
    items: list[dict[str, Any]] = []
    examined = 0
    last: tuple[str, float] = ("", 0.0)
    while len(items) < limit and examined < scan_limit:
        chunk = list(itertools.islice(entries, min(200, scan_limit - examined)))
        if not chunk:
            return items, None
        pipe = r.pipeline(transaction=False)
        for msg_id, _ in chunk:
            pipe.hgetall(keys.message(msg_id))
        for entry, record in zip(chunk, pipe.execute(), strict=True):
            examined, last = examined + 1, entry
            if record and all(record.get(field) == value for field, value in wanted.items()):
                items.append(public_view(record))
                if len(items) == limit:
                    break
    return items, zset_pages.cursor_after(*last)


def prune_finished(r: redis.Redis, retention: float, now: float | None = None,
                   batch: int = 500) -> int:
    """Delete messages that finished (sent, delivered, read, failed) more than `retention` s ago."""
    if retention <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - retention
    pruned = offset = 0
    while True:
        gone, kept, examined = PRUNE(r, all_messages=keys.MESSAGES_ALL, cutoff=f"{cutoff:.6f}", offset=offset,
                                     batch=batch)
        pruned += gone
        offset += kept  # what stays (not finished yet) is passed over, not examined again
        if examined < batch:
            return pruned
