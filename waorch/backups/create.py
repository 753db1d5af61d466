"""Backups: the Redis state and every session's data directory in one dated tar.gz with a manifest
of sha256 checksums. A restore verifies the whole archive and stages everything before it changes
anything, then swaps Redis and the sessions directory in; on failure the previous state stays.

Redis is read with SCAN + DUMP + PTTL, so any Redis (a remote or managed one too) can be backed
up without access to its RDB file. See docs/backups.md.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import IO, Any

import redis

from waorch import __version__
from waorch.backups import store_dump
from waorch.core import keys, settings
from waorch.runners.process import HEARTBEAT as SUPERVISOR_HEARTBEAT
from waorch.runners.process import LOCK as SUPERVISOR_LOCK
from waorch.sessions import registry as sessions
from waorch.sessions import store as session_store

log = logging.getLogger(__name__)

FORMAT = "waorch-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REDIS_MEMBER = "redis/keys.jsonl"
SESSIONS = "sessions"
# A restore stages keys under this prefix before renaming them into place in one MULTI/EXEC.
STAGING_PREFIX = b"waorch:restore-staging:"
# Locks and heartbeats of processes alive at backup time: meaningless in another run, and a
# restored one would hold off the next supervisor or backup until it expired. Neither saved
# nor touched by a restore.
LIVE_KEYS = frozenset(k.encode() for k in (SUPERVISOR_HEARTBEAT, SUPERVISOR_LOCK, keys.BACKUP_LOCK))
LOCK_TTL = 3600
STALE_PARTIAL = 86400.0  # a partial archive this old is left over from a crashed backup
_NAME = re.compile(r"^waorch-backup-(\d{8}T\d{6}Z)(?:-(\d+))?\.tar\.gz$")
_PARTIAL_PREFIX = ".waorch-backup-"
_BATCH = 500
_CHUNK = 1 << 20
_SPOOL_MAX = 32 << 20
_MANIFEST_MAX = 64 << 20
_STABLE_TRIES = 3


class BackupBusy(RuntimeError):
    """Another backup or restore holds the lock."""


class RestoreError(RuntimeError):
    """The restore did not happen: Redis and the sessions directory are as they were."""


class ArchiveRefused(RestoreError):
    """Not a complete, intact waorch backup (unreadable, truncated, tampered, unsafe paths)."""


class RestoreFailed(RestoreError):
    """Something failed after verification; everything was rolled back."""


class StackRunning(RestoreError):
    """A `waorch supervisor` is alive: restoring under running workers would be undone by them."""


class RestoreUncertain(RuntimeError):
    """Redis went away during the final transaction: whether it took the new state is unknown."""


# --- settings ----------------------------------------------------------------------------------

def backup_dir() -> Path:
    """WAORCH_BACKUP_DIR, else `<WAORCH_STATE_DIR>/backups`."""
    conf = settings.get()
    return Path(conf.backup_dir or Path(conf.state_dir) / "backups").resolve()


def sessions_root() -> Path:
    return sessions.sessions_root()


def store_url() -> str | None:
    """The PostgreSQL session store to back up and restore, None for `file` (WAORCH_SESSION_STORE)."""
    return session_store.configured() if session_store.uses_postgres() else None


# --- shared machinery ---------------------------------------------------------------------------

@contextlib.contextmanager
def binary_client(r: redis.Redis) -> Iterator[redis.Redis]:
    """A client on the same Redis that does not decode: key names and DUMP payloads are bytes."""
    pool = r.connection_pool
    own = redis.ConnectionPool(connection_class=pool.connection_class,
                               **{**pool.connection_kwargs, "decode_responses": False})
    try:
        yield redis.Redis(connection_pool=own)
    finally:
        own.disconnect()


@contextlib.contextmanager
def exclusive(r: redis.Redis, what: str) -> Iterator[None]:
    """One backup or restore at a time per Redis (beat, CLI and a redelivered task may overlap)."""
    value = f"{what} pid={os.getpid()} {secrets.token_hex(8)}"
    if not r.set(keys.BACKUP_LOCK, value, nx=True, ex=LOCK_TTL):
        raise BackupBusy(f"another backup or restore is running ({as_text(r.get(keys.BACKUP_LOCK))})")
    try:
        yield
    finally:
        with r.pipeline() as pipe, contextlib.suppress(redis.WatchError):
            pipe.watch(keys.BACKUP_LOCK)
            if as_text(pipe.get(keys.BACKUP_LOCK)) == value:
                pipe.multi()
                pipe.delete(keys.BACKUP_LOCK)
                pipe.execute()


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def is_skipped_key(key: bytes) -> bool:
    return key in LIVE_KEYS or key.startswith(STAGING_PREFIX)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_hashing(source: IO[bytes], target: IO[bytes] | None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if target is not None:
            target.write(chunk)
    return digest.hexdigest(), size


# --- backup -------------------------------------------------------------------------------------

def create_backup(r: redis.Redis, out_dir: Path | None = None, *, sessions_dir: Path | None = None,
                  keep: int | None = None) -> Path:
    """Write `waorch-backup-<UTC time>.tar.gz` (mode 0600) into `out_dir`; keep the `keep` newest."""
    out_dir = Path(out_dir) if out_dir else backup_dir()
    source = Path(sessions_dir) if sessions_dir else sessions_root()
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    when = datetime.now(UTC)
    with exclusive(r, "backup"):
        _remove_stale_partials(out_dir)
        fd, name = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, suffix=".partial", dir=out_dir)  # 0600
        partial = Path(name)
        try:
            with os.fdopen(fd, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                    manifest = _write_members(r, tar, source.resolve(), out_dir, when)
                    _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
                raw.flush()
                os.fsync(raw.fileno())
            final = _publish(partial, out_dir, when)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    log.info("backup %s: %d keys, %d sessions", final, manifest["redis"]["keys"],
             len(manifest["sessions"]["ids"]))
    if keep:
        prune(out_dir, keep)
    return final


def _write_members(r: redis.Redis, tar: tarfile.TarFile, source: Path, spool_dir: Path,
                   when: datetime) -> dict:
    files: dict[str, dict] = {}
    dirs = ["redis"]
    _add_dir(tar, "redis", 0o700, when.timestamp())
    with tempfile.SpooledTemporaryFile(_SPOOL_MAX, dir=spool_dir) as spool:
        count = _dump_redis(r, spool)
        files[REDIS_MEMBER] = _add_spool(tar, REDIS_MEMBER, spool, 0o600, when.timestamp())
    ids, unstable, skipped = _add_sessions(tar, source, files, dirs, spool_dir)
    store = _add_store(tar, files, dirs, spool_dir, when)
    info = r.info("server")
    return {**({"store": store} if store else {}),
        "format": FORMAT, "format_version": FORMAT_VERSION, "waorch_version": __version__,
        "created_at": when.isoformat(), "created_at_unix": when.timestamp(),
        "redis": {"keys": count, "version": info.get("redis_version", ""),
                  "db": r.connection_pool.connection_kwargs.get("db", 0)},
        "sessions": {"dir": str(source), "ids": ids, "unstable": unstable, "skipped": skipped},
        "files": files, "dirs": dirs,
    }


def _dump_redis(r: redis.Redis, out: IO[bytes]) -> int:
    """Every key as a JSON line {key, type, pttl (ms, -1: none), dump} (base64); returns the count."""
    seen: set[bytes] = set()  # SCAN may return a key twice while the keyspace rehashes
    with binary_client(r) as rb:
        cursor = None
        while cursor != 0:
            cursor, batch = rb.scan(cursor or 0, count=_BATCH)
            batch = [k for k in batch if k not in seen and not is_skipped_key(k)]
            if not batch:
                continue
            pipe = rb.pipeline(transaction=True)  # each key's TYPE, PTTL and DUMP agree
            for key in batch:
                pipe.type(key).pttl(key).dump(key)
            answers = pipe.execute()
            for i, key in enumerate(batch):
                kind, pttl, payload = answers[3 * i:3 * i + 3]
                if payload is None or pttl in (0, -2):
                    continue  # deleted or expired since the SCAN
                seen.add(key)
                line = {"key": base64.b64encode(key).decode(), "type": as_text(kind),
                        "pttl": pttl if pttl > 0 else -1, "dump": base64.b64encode(payload).decode()}
                out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return len(seen)


def _add_store(tar: tarfile.TarFile, files: dict, dirs: list, spool_dir: Path, when: datetime) -> dict | None:
    """The PostgreSQL session store's tables (waorch/backups/store_dump.py); None with `file`."""
    url = store_url()
    if url is None:
        return None
    _add_dir(tar, store_dump.STORE, 0o700, when.timestamp())
    dirs.append(store_dump.STORE)

    def write_member(name: str, chunks: Iterator[bytes]) -> int:
        with tempfile.SpooledTemporaryFile(_SPOOL_MAX, dir=spool_dir) as spool:
            for chunk in chunks:
                spool.write(chunk)
            files[name] = _add_spool(tar, name, spool, 0o600, when.timestamp())
        return files[name]["size"]

    return store_dump.dump(url, write_member)


def _add_sessions(tar: tarfile.TarFile, source: Path, files: dict, dirs: list,
                  spool_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """Regular files and directories under `source` (symlinks and special files are skipped)."""
    unstable: list[str] = []
    skipped: list[str] = []
    if not source.is_dir():
        return [], unstable, skipped
    _add_dir(tar, SESSIONS, source.stat().st_mode, source.stat().st_mtime)
    dirs.append(SESSIONS)
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        rel = here.relative_to(source).as_posix()
        prefix = SESSIONS if rel == "." else f"{SESSIONS}/{rel}"
        dirnames.sort()
        for name in list(dirnames):
            st = os.lstat(here / name)
            if S_ISDIR(st.st_mode):
                _add_dir(tar, f"{prefix}/{name}", st.st_mode, st.st_mtime)
                dirs.append(f"{prefix}/{name}")
            else:  # a symlink to a directory: os.walk does not follow it, nor do we
                dirnames.remove(name)
                skipped.append(f"{prefix}/{name}")
        for name in sorted(filenames):
            arcname = f"{prefix}/{name}"
            outcome = _add_file(tar, here / name, arcname, files, spool_dir)
            if outcome in ("unstable", "skipped"):
                (unstable if outcome == "unstable" else skipped).append(arcname)
    if skipped:
        log.warning("backup skipped %d symlinks/special files in %s", len(skipped), source)
    ids = [d.split("/")[1] for d in dirs if d.count("/") == 1 and d.startswith(SESSIONS + "/")]
    return ids, unstable, skipped


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str, files: dict, spool_dir: Path) -> str:
    """Copy one file; a worker may be writing it, so retry until size and mtime hold still."""
    for attempt in range(_STABLE_TRIES):
        try:
            before = os.lstat(path)
            if not S_ISREG(before.st_mode):
                return "skipped"
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return "gone"  # deleted while we walked: it is not part of the state any more
        with os.fdopen(fd, "rb") as src, tempfile.SpooledTemporaryFile(_SPOOL_MAX, dir=spool_dir) as spool:
            shutil.copyfileobj(src, spool, _CHUNK)
            after = os.fstat(fd)
            stable = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) \
                and spool.tell() == after.st_size
            if stable or attempt == _STABLE_TRIES - 1:
                files[arcname] = _add_spool(tar, arcname, spool, before.st_mode, before.st_mtime)
                return "ok" if stable else "unstable"
    return "unstable"


def _add_spool(tar: tarfile.TarFile, name: str, spool: IO[bytes], mode: int, mtime: float) -> dict:
    spool.seek(0)
    digest, size = copy_hashing(spool, None)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode & 0o777, int(mtime)
    spool.seek(0)
    tar.addfile(info, spool)
    return {"sha256": digest, "size": size}


def _add_dir(tar: tarfile.TarFile, name: str, mode: int, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode & 0o777, int(mtime)
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    with tempfile.SpooledTemporaryFile(_SPOOL_MAX) as spool:
        spool.write(data)
        spool.seek(0)
        tar.addfile(info, spool)


def _publish(partial: Path, out_dir: Path, when: datetime) -> Path:
    """Give the finished archive its dated name without ever replacing an existing archive."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        final = out_dir / f"waorch-backup-{stamp}{f'-{n}' if n else ''}.tar.gz"
        try:
            os.link(partial, final)  # fails if `final` exists, unlike rename
        except FileExistsError:
            continue
        partial.unlink()
        _fsync_dir(out_dir)
        return final
    raise BackupBusy(f"too many backups named {stamp} in {out_dir}")


def list_backups(directory: Path) -> list[Path]:
    """waorch archives in `directory`, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = [(m[1], int(m[2] or 0), p) for p in Path(directory).iterdir()
             if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, _, p in sorted(found)]


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest archives; returns the deleted ones."""
    if keep < 1:
        raise ValueError("keep at least one backup")
    doomed = list_backups(directory)[:-keep]
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("pruned old backup %s", path)
    return doomed


def _remove_stale_partials(out_dir: Path) -> None:
    cutoff = time.time() - STALE_PARTIAL
    for path in out_dir.glob(f"{_PARTIAL_PREFIX}*.partial"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
