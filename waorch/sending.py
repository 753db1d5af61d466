"""Accepting messages from the API: one or a batch, idempotent, then handed to dispatch."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from waorch import messages, settings

log = logging.getLogger("waorch.sending")


def message_record(item: dict[str, Any]) -> dict[str, Any]:
    """A validated send payload as the fields of a new message record."""
    return {
        "id": messages.new_message_id(),
        "to": item["to"],
        "text": item.get("text") or "",
        "from_requested": item.get("sender"),
        "media": json.dumps(item["media"]) if item.get("media") else None,
        "client_ref": item.get("client_ref"),
        "expires_at": item.get("expires_at"),
    }


def accept_and_dispatch(r: redis.Redis, tenant: str, items: list[dict[str, Any]],
                        build_response, idempotency_key: str | None,
                        payload_hash: str) -> messages.Accepted:
    """Store the messages (idempotently) and publish their dispatch work."""
    records = [message_record(item) for item in items]
    response = build_response([rec["id"] for rec in records])
    accepted = messages.accept(r, tenant, records, response, idempotency_key, payload_hash,
                               settings.get().idempotency_ttl)
    if accepted.new_ids:
        publish_dispatch(accepted.new_ids)
    return accepted


def publish_dispatch(msg_ids: list[str]) -> None:
    # The records are durable already: if publishing fails, the recover_unrouted sweep
    # dispatches them later, so the 202 stays true.
    from tasks.dispatch import enqueue  # noqa: PLC0415 (Celery app only when sending)

    try:
        enqueue(msg_ids)
    except Exception:  # noqa: BLE001 - any broker failure is recovered by the sweep
        log.warning("dispatch publish failed for %d message(s); the sweep will route them",
                    len(msg_ids), exc_info=True)
