"""Client webhook subscriptions (per tenant) and the rules their target URLs must follow.

A target must be https and resolve only to public addresses, unless WAORCH_WEBHOOK_ALLOWLIST
names its host or covers every address it resolves to (that also permits http). Delivery
connects to the address checked here, so a name that re-resolves elsewhere gains nothing.
Secrets are kept sealed (Fernet, keyed from WAORCH_SECRET_KEY) and never shown after creation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from cryptography.fernet import Fernet, InvalidToken

from waorch.core import keys, lua, settings

log = logging.getLogger(__name__)

SUBSCRIBE = lua.Script("webhooks/subscribe", args=("sub_id", "tenant", "most"), rest="fields")
UPDATE = lua.Script("webhooks/update", args=("sub_id",), rest="fields")
UNSUBSCRIBE = lua.Script("webhooks/unsubscribe", args=("sub_id", "tenant", "lanes"))

EVENT_TYPES = ("message.status", "message.inbound", "session.status")
MAX_PER_TENANT = 10
MAX_URL = 2048
SECRET_MIN, SECRET_MAX = 16, 256
LANES = 8  # ordered queues per subscription, delivered in parallel; a message keeps to one

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class WebhookUrlError(ValueError):
    """The URL may not be used as a client webhook target (the message says why)."""


class TooManyWebhooks(RuntimeError):
    pass


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def covers(self, host: str, addresses: list[Address]) -> bool:
        if host in self.hosts:
            return True
        return bool(addresses) and all(any(a in net for net in self.networks) for a in addresses)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to present (Host, SNI)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str
    netloc: str


def parse_allowlist(text: str) -> Allowlist:
    """`host,host,CIDR,...` as in WAORCH_WEBHOOK_ALLOWLIST; unusable entries are logged and skipped."""
    hosts, networks = set(), []
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if "/" in entry or not entry.replace("-", "").replace(".", "").isalnum():
            log.warning("ignoring unusable WAORCH_WEBHOOK_ALLOWLIST entry %r", entry)
            continue
        hosts.add(entry.lower().rstrip("."))
    return Allowlist(frozenset(hosts), tuple(networks))


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _public(address: Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast


def check_url(url: object, allowlist: Allowlist | None = None,
              resolve: Resolver = system_resolver) -> Target:
    """The checked target of `url`, or WebhookUrlError; every address the name resolves to counts."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookUrlError("give an http(s) URL")
    url = url.strip()
    if len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        raise WebhookUrlError(f"the URL must be at most {MAX_URL} printable characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise WebhookUrlError(f"not a usable URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlError("the URL must start with https:// (or http:// for allow-listed hosts)")
    if not host:
        raise WebhookUrlError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("credentials in the URL are not accepted: use the signing secret")
    if parts.fragment:
        raise WebhookUrlError("the URL must not have a #fragment")
    host = host.lower().rstrip(".")
    if port is None:
        port = 443 if scheme == "https" else 80
    elif port == 0:
        raise WebhookUrlError("port 0 is not a usable port")
    allow = allowlist if allowlist is not None else parse_allowlist(settings.get().webhook_allowlist)
    try:
        found = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookUrlError(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from None
    addresses = []
    for text in dict.fromkeys(found):
        try:
            addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            raise WebhookUrlError(f"{host} resolved to an unusable address") from None
    if not addresses:
        raise WebhookUrlError(f"cannot resolve {host}")
    if not allow.covers(host, addresses):
        if scheme != "https":
            raise WebhookUrlError("plain http is only allowed for hosts in WAORCH_WEBHOOK_ALLOWLIST")
        private = [str(a) for a in addresses if not _public(a)]
        if private:
            raise WebhookUrlError(
                f"{host} resolves to a loopback, private, link-local or multicast address "
                f"({', '.join(private[:3])}); allow it with WAORCH_WEBHOOK_ALLOWLIST")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc
    return Target(url=url, scheme=scheme, host=host, port=port, path=path,
                  address=str(addresses[0]), netloc=netloc)


# --- secrets ---------------------------------------------------------------------------------

def _fernet() -> Fernet:
    digest = hmac.new(settings.get().secret_key.encode(), b"client-webhook-secrets", hashlib.sha256)
    return Fernet(base64.urlsafe_b64encode(digest.digest()))


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The secret, or None when it was sealed under another WAORCH_SECRET_KEY."""
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def check_secret(secret: object) -> str:
    if not isinstance(secret, str) or not SECRET_MIN <= len(secret) <= SECRET_MAX \
            or not secret.isprintable():
        raise ValueError(f"the secret must be {SECRET_MIN}-{SECRET_MAX} printable characters")
    return secret


# --- subscriptions ---------------------------------------------------------------------------

def public_view(record: dict[str, str]) -> dict:
    """What the API shows of a subscription: never the secret."""
    return {
        "id": record["id"], "tenant": record["tenant"], "url": record["url"],
        "events": [e for e in record.get("events", "").split(",") if e],
        "created_at": float(record["created_at"]) if record.get("created_at") else None,
        "status": "disabled" if record.get("disabled_at") else "active",
        "disabled_at": float(record["disabled_at"]) if record.get("disabled_at") else None,
        "disabled_reason": record.get("disabled_reason") or None,
    }


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _event_types(events: list[str]) -> list[str]:
    """The event types asked for, once each, in order; ValueError for an unknown one or none."""
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown or not chosen:
        raise ValueError(f"unknown event types: {', '.join(unknown)}" if unknown else "give an event type")
    return chosen


def create(r: redis.Redis, tenant: str, url: str, events: list[str] | None = None,
           secret: str | None = None) -> tuple[dict, str | None]:
    """Subscribe `tenant`; returns (described view, generated secret or None). Checks the URL first."""
    target = check_url(url)
    chosen = _event_types(events or EVENT_TYPES)
    generated = None
    if secret is None:
        generated = secret = _new_secret()
    check_secret(secret)
    sub_id = "wh_" + secrets.token_hex(8)
    record = {"id": sub_id, "tenant": tenant, "url": target.url, "events": ",".join(chosen),
              "secret": seal(secret), "created_at": f"{time.time():.3f}"}
    outcome = SUBSCRIBE(r, sub_id=sub_id, tenant=tenant, most=MAX_PER_TENANT, fields=lua.pairs(record))
    if outcome != "ok":
        raise TooManyWebhooks(f"a tenant may have at most {MAX_PER_TENANT} webhooks")
    log.info("tenant %s subscribed %s to %s", tenant, sub_id, target.host)
    return describe(r, record), generated


def update(r: redis.Redis, sub_id: str, tenant: str | None, url: str | None = None,
           events: list[str] | None = None, secret: str | None = None,
           rotate_secret: bool = False) -> tuple[dict, str | None] | None:
    """Change a subscription's URL, events and/or secret; (described view, generated secret or None), or None
    when unknown or not the tenant's. Queued events keep their place and go to what is set now."""
    record = get(r, sub_id, tenant)
    if record is None:
        return None
    changes: dict[str, str] = {}
    if url is not None:
        target = check_url(url)
        changes["url"] = target.url
    if events is not None:
        changes["events"] = ",".join(_event_types(events))
    generated = None
    if rotate_secret:
        generated = secret = _new_secret()
    if secret is not None:
        changes["secret"] = seal(check_secret(secret))
    if changes:
        if UPDATE(r, sub_id=sub_id, fields=lua.pairs(changes)) != "ok":
            return None
        log.info("webhook %s updated: %s", sub_id, ", ".join(sorted(changes)))
    updated = get(r, sub_id, tenant)
    return (describe(r, updated), generated) if updated else None


def get(r: redis.Redis, sub_id: str, tenant: str | None = None) -> dict | None:
    """The stored record (sealed secret included: internal use), None if unknown or not the tenant's."""
    if not isinstance(sub_id, str) or not sub_id or len(sub_id) > 64:
        return None
    record = r.hgetall(keys.client_webhook(sub_id))
    if not record.get("id") or (tenant is not None and record.get("tenant") != tenant):
        return None
    return record


def list_for(r: redis.Redis, tenant: str | None) -> list[dict]:
    """Subscriptions of `tenant` (all when None), oldest first."""
    ids = r.smembers(keys.tenant_webhooks(tenant) if tenant else keys.WEBHOOKS_ALL)
    pipe = r.pipeline(transaction=False)
    for sub_id in ids:
        pipe.hgetall(keys.client_webhook(sub_id))
    found = [rec for rec in pipe.execute() if rec.get("id")]
    return sorted(found, key=lambda rec: (float(rec.get("created_at") or 0), rec["id"]))


def delete(r: redis.Redis, sub_id: str, tenant: str | None = None) -> bool:
    """Unsubscribe; events still queued for it are dropped (dead letters stay listable)."""
    record = get(r, sub_id, tenant)
    if record is None:
        return False
    return bool(UNSUBSCRIBE(r, sub_id=sub_id, tenant=record["tenant"], lanes=LANES))


def enable(r: redis.Redis, sub_id: str, tenant: str | None = None) -> dict | None:
    """Deliver to a webhook again after its endpoint answered 410 Gone; its record, None if unknown.

    Events of the time it was disabled were not queued; those queued when it was disabled are
    dead letters, which can be redelivered now.
    """
    record = get(r, sub_id, tenant)
    if record is None:
        return None
    r.hdel(keys.client_webhook(sub_id), "disabled_at", "disabled_reason")
    log.info("webhook %s enabled again", sub_id)
    return get(r, sub_id, tenant)


def describe(r: redis.Redis, record: dict[str, str]) -> dict:
    """What the API and CLI show of a stored subscription: its public view and how delivery goes."""
    return public_view(record) | {"delivery": delivery_status(r, record)}


def delivery_status(r: redis.Redis, record: dict[str, str]) -> dict:
    """How delivery to this subscription goes: queued events, delivered count, current failure."""
    sub_id = record["id"]
    pipe = r.pipeline(transaction=False)
    for lane in range(LANES):
        pipe.llen(keys.webhook_lane(sub_id, lane))
    for lane in range(LANES):
        pipe.hgetall(keys.webhook_lane_state(sub_id, lane))
    found = pipe.execute()
    failing = [s for s in found[LANES:] if s.get("last_error")]
    worst = min(failing, key=lambda s: float(s.get("failing_since") or 0)) if failing else None
    return {
        "pending": sum(found[:LANES]),
        "delivered": int(record.get("delivered") or 0),
        "last_delivery_at": float(record["last_delivery_at"]) if record.get("last_delivery_at") else None,
        "failing_since": float(worst["failing_since"]) if worst and worst.get("failing_since") else None,
        "last_error": worst.get("last_error") if worst else None,
        "next_attempt_at": float(worst["next_at"]) if worst and worst.get("next_at") else None,
    }
