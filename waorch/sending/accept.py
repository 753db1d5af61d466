"""Accepting messages from the API: one or a batch, idempotent, then handed to dispatch."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from waorch.core import jobs, keys, lua, settings

log = logging.getLogger(__name__)

ACCEPT = lua.Script("sending/accept", keys=("idempotency", "all_messages", "unrouted", "tenant_messages"),
                    args=("records", "now", "body_hash", "ttl", "response"))


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body."""


@dataclass(frozen=True)
class Accepted:
    response: dict[str, Any]
    replayed: bool
    new_ids: list[str]


def new_message_id() -> str:
    # time-ordered prefix keeps ids roughly sortable for humans reading logs
    return f"m{int(time.time() * 1000):x}{secrets.token_hex(6)}"


def body_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def store(r: redis.Redis, tenant: str, records: list[dict[str, Any]], response: dict[str, Any],
           idempotency_key: str | None = None, payload_hash: str = "", ttl: int = 86400,
           now: float | None = None) -> Accepted:
    """Store new message records (each with its `id`) atomically; replay or refuse on key reuse."""
    now = time.time() if now is None else now
    idem = keys.idempotency(tenant, idempotency_key) if idempotency_key else ""
    fields = [{**{k: v for k, v in rec.items() if v is not None}, "tenant": tenant} for rec in records]
    result = ACCEPT(r, idempotency=idem, all_messages=keys.MESSAGES_ALL, unrouted=keys.MESSAGES_UNROUTED,
                    tenant_messages=keys.tenant_messages(tenant), records=json.dumps(fields),
                    now=f"{now:.6f}", body_hash=payload_hash, ttl=ttl, response=json.dumps(response))
    if result[0] == "replay":
        return Accepted(json.loads(result[1]), True, [])
    if result[0] == "conflict":
        raise IdempotencyConflict()
    return Accepted(response, False, [rec["id"] for rec in records])


def remembered(r: redis.Redis, tenant: str, idempotency_key: str,
               payload_hash: str) -> dict[str, Any] | None:
    """The first answer given for this key and body, None for a new key; conflict for another body."""
    seen = r.get(keys.idempotency(tenant, idempotency_key))
    if not seen:
        return None
    record = json.loads(seen)
    if record["hash"] != payload_hash:
        raise IdempotencyConflict()
    return json.loads(record["response"])


def message_record(item: dict[str, Any]) -> dict[str, Any]:
    """A validated send payload as the fields of a new message record."""
    return {
        "id": new_message_id(),
        "to": item["to"],
        "text": item.get("text") or "",
        "from_requested": item.get("sender"),
        "media": json.dumps(item["media"]) if item.get("media") else None,
        "client_ref": item.get("client_ref"),
        "expires_at": item.get("expires_at"),
    }


def accept_and_dispatch(r: redis.Redis, tenant: str, items: list[dict[str, Any]],
                        build_response, idempotency_key: str | None,
                        payload_hash: str) -> Accepted:
    """Store the messages (idempotently) and publish their dispatch work."""
    records = [message_record(item) for item in items]
    response = build_response([rec["id"] for rec in records])
    accepted = store(r, tenant, records, response, idempotency_key, payload_hash,
                     settings.get().idempotency_ttl)
    if accepted.new_ids:
        publish_dispatch(accepted.new_ids)
    return accepted


DISPATCH_TASK = "tasks.dispatch.dispatch_messages"
DISPATCH_CHUNK = 100  # message ids per dispatch task


def publish_dispatch(msg_ids: list[str]) -> None:
    """Publish dispatch work for accepted messages, in chunks; never raises.

    The records are durable already: if publishing fails, the recover_unrouted sweep dispatches
    them later, so the 202 stays true."""
    try:
        for start in range(0, len(msg_ids), DISPATCH_CHUNK):
            jobs.publish(DISPATCH_TASK, [msg_ids[start:start + DISPATCH_CHUNK]], queue="dispatch")
    except Exception:  # noqa: BLE001 - any broker failure is recovered by the sweep
        log.warning("dispatch publish failed for %d message(s); the sweep will route them",
                    len(msg_ids), exc_info=True)
