"""API keys: stored as SHA-256 hashes, each bound to a tenant and a set of scopes."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import redis

from waorch.core import keys

SCOPES = ("send", "read", "admin")
KEY_PREFIX = "wao_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant of the key and what it may do."""

    tenant: str
    scopes: frozenset[str]
    key_id: str  # first hex digits of the hash: safe to log

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {','.join(SCOPES)}; got {text!r}")
    return scopes


def create_key(r: redis.Redis, tenant: str, scopes: frozenset[str] | str,
               label: str = "") -> str:
    """Make a new key for `tenant` (created if new) and return it; only its hash is kept."""
    if isinstance(scopes, str):
        scopes = parse_scopes(scopes)
    tenant = tenant.strip()
    if not tenant or len(tenant) > 64 or any(c.isspace() for c in tenant):
        raise ValueError("tenant must be 1-64 characters without spaces")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = hash_key(raw_key)
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.api_key(digest), mapping={
        "tenant": tenant, "scopes": ",".join(sorted(scopes)), "label": label,
        "created_at": f"{time.time():.3f}",
    })
    pipe.sadd(keys.APIKEYS_ALL, digest)
    pipe.sadd(keys.TENANTS, tenant)
    pipe.execute()
    return raw_key


def lookup(r: redis.Redis, raw_key: str) -> Principal | None:
    """The principal for a presented key, or None when unknown or revoked."""
    if not raw_key or len(raw_key) > 200:
        return None
    digest = hash_key(raw_key)
    record = r.hgetall(keys.api_key(digest))
    if not record:
        return None
    return Principal(tenant=record["tenant"], scopes=frozenset(record["scopes"].split(",")),
                     key_id=digest[:12])


def revoke(r: redis.Redis, key_id: str) -> int:
    """Delete every key whose hash starts with `key_id`; returns how many."""
    removed = 0
    for digest in r.smembers(keys.APIKEYS_ALL):
        if digest.startswith(key_id):
            r.delete(keys.api_key(digest))
            r.srem(keys.APIKEYS_ALL, digest)
            removed += 1
    return removed


def list_keys(r: redis.Redis) -> list[dict]:
    out = []
    for digest in sorted(r.smembers(keys.APIKEYS_ALL)):
        record = r.hgetall(keys.api_key(digest))
        if record:
            out.append({"key_id": digest[:12], **record})
    return out
