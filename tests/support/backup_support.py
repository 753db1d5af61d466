"""Helpers for the backup tests: a varied Redis state and session directories, and snapshots of
both that compare byte for byte (DUMP payloads, file contents and modes)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from waorch.backups import create as backups
from waorch.core import settings
from waorch.sessions import registry as sessions


def use_dirs(monkeypatch, tmp_path: Path) -> Path:
    """Data, state and backup directories under tmp_path; returns the sessions directory."""
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WAORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("WAORCH_BACKUP_DIR", raising=False)
    settings.get.cache_clear()
    return sessions.sessions_root()


def binary(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def populate(url: str, root: Path) -> None:
    """Every Redis type, binary names and values, TTLs; two session directories."""
    rb = binary(url)
    rb.hset("session:s1", mapping={"id": "s1", "status": "connected", "proxy_url": "socks5h://u:pw@h:1"})
    rb.set("session:qr:s1", "qr-payload", ex=3600)
    rb.set("idem:acme:k", "first answer", px=7_200_000)
    rb.rpush("session:events:s1", *[f'{{"n": {i}}}' for i in range(50)])
    rb.sadd("sessions:active", "s1", "s2")
    rb.zadd("messages:all", {f"m{i}": 1000 + i for i in range(300)})  # skiplist, not listpack
    rb.xadd("a-stream", {"field": "value"})
    rb.set(b"\xff\xfe binary \x00 key", bytes(range(256)))
    rb.hset("big-hash", mapping={f"f{i}": "x" * 100 for i in range(600)})
    rb.close()
    for sid in ("s1", "s2"):
        (root / sid / "media").mkdir(parents=True, exist_ok=True)
        (root / sid / "creds.json").write_text(f'{{"session": "{sid}", "creds": "sim1.secret"}}')
        (root / sid / "journal.jsonl").write_bytes(os.urandom(5000))
        (root / sid / "media" / "photo.bin").write_bytes(os.urandom(70_000))
    (root / "s2" / "empty-dir").mkdir()
    os.chmod(root / "s1" / "creds.json", 0o640)


_READ = {
    b"string": lambda rb, k: rb.get(k),
    b"hash": lambda rb, k: rb.hgetall(k),
    b"list": lambda rb, k: rb.lrange(k, 0, -1),
    b"set": lambda rb, k: rb.smembers(k),
    b"zset": lambda rb, k: rb.zrange(k, 0, -1, withscores=True),
    b"stream": lambda rb, k: rb.xrange(k),
}


def redis_snapshot(url: str) -> dict[bytes, tuple[bytes, object, int]]:
    """key -> (type, value, PTTL) for every key (values by content: a DUMP of a hash table may
    list its fields in another order after a RESTORE)."""
    rb = binary(url)
    try:
        found = {}
        for key in rb.scan_iter(count=1000):
            kind = rb.type(key)
            found[key] = (kind, _READ[kind](rb, key), rb.pttl(key))
        return found
    finally:
        rb.close()


def dir_snapshot(root: Path) -> dict[str, tuple[str, bytes | None, int]]:
    """relative path -> (kind, content, mode) under root ({} when it does not exist)."""
    if not root.exists():
        return {}
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        mode = path.lstat().st_mode & 0o777
        found[rel] = ("dir", None, mode) if path.is_dir() else ("file", path.read_bytes(), mode)
    return found


def same_redis(before: dict, after: dict, ttl_slack_ms: int = 60_000) -> None:
    """Same keys, types and values; TTLs alike (never longer than `before`'s, which must have been
    taken before the backup: a restore gives back the TTL left at backup time)."""
    assert sorted(after) == sorted(before)
    for key, (kind, payload, pttl) in before.items():
        got_kind, got_payload, got_pttl = after[key]
        assert (got_kind, got_payload) == (kind, payload), key
        if pttl == -1:
            assert got_pttl == -1, key
        else:
            assert 0 < got_pttl <= pttl and pttl - got_pttl < ttl_slack_ms, (key, pttl, got_pttl)


def leftovers(url: str, root: Path) -> list:
    """Staging keys or directories a restore must never leave behind."""
    rb = binary(url)
    try:
        keys = list(rb.scan_iter(match=backups.STAGING_PREFIX + b"*"))
    finally:
        rb.close()
    parent = root.parent
    files = [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []
    return keys + files



@contextmanager
def same_state_after(url: str, root: Path) -> Iterator[None]:
    """Asserts that Redis and the sessions directory are after the block as they were before it,
    with no staging leftovers."""
    before_redis, before_dirs = redis_snapshot(url), dir_snapshot(root)
    yield
    same_redis(before_redis, redis_snapshot(url))
    assert dir_snapshot(root) == before_dirs
    assert leftovers(url, root) == []

Members = list[tuple[tarfile.TarInfo, bytes | None]]


def rewrite(source: Path, target: Path, change: Callable[[Members], Members]) -> Path:
    """Copy an archive member by member through `change` (tampering on purpose)."""
    with tarfile.open(source, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(target, "w:gz") as out:
        for info, data in change(members):
            if data is not None:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(info)
    return target
