"""Restoring a backup without ever half-restoring.

First the whole archive is read, checked (safe member names, only files and directories, every
sha256 and size as in the manifest) and staged: files in a directory next to the sessions
directory, keys under a staging prefix in Redis (which also proves this Redis accepts every DUMP
payload). Only then is anything live touched: the sessions directory is swapped by two renames and
Redis by one MULTI/EXEC (delete the old keys, rename the staged ones into place). If that
transaction does not go through, the renames are undone. See docs/backups.md.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import redis

from waorch.backups import store_dump
from waorch.backups.create import (
    FORMAT,
    FORMAT_VERSION,
    LIVE_KEYS,
    MANIFEST,
    REDIS_MEMBER,
    SESSIONS,
    STAGING_PREFIX,
    SUPERVISOR_HEARTBEAT,
    ArchiveRefused,
    RestoreFailed,
    RestoreUncertain,
    StackRunning,
    as_text,
    binary_client,
    copy_hashing,
    exclusive,
    is_skipped_key,
    sessions_root,
    store_url,
)

_BATCH = 500
_MANIFEST_MAX = 64 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def verify_archive(archive: Path) -> dict:
    """The manifest of an intact archive (every member read and checked); ArchiveRefused if not."""
    with tempfile.TemporaryDirectory(prefix="waorch-verify-") as tmp:
        manifest = _read_archive(Path(archive), Path(tmp))
        for _ in _records(Path(tmp) / REDIS_MEMBER, manifest):
            pass
    return manifest


def restore_backup(r: redis.Redis, archive: Path, *, sessions_dir: Path | None = None,
                   force: bool = False) -> dict:
    """Make Redis and the sessions directory what the archive holds, or raise RestoreError having
    changed nothing. Keys not in the archive are deleted (except live locks and heartbeats)."""
    archive = Path(archive)
    target = Path(sessions_dir or sessions_root()).resolve()
    if not force:
        check_stack_stopped(r)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(r, "restore"), binary_client(r) as rb:
        stage = Path(tempfile.mkdtemp(prefix=".waorch-restore-", dir=target.parent))
        ours = STAGING_PREFIX + secrets.token_hex(8).encode()
        staged: list[tuple[bytes, bytes, int]] = []
        try:
            manifest = _read_archive(archive, stage)
            _check_no_eviction(rb)
            staged = _stage_keys(rb, _records(stage / REDIS_MEMBER, manifest), ours, manifest)
            # the store's tables load into a transaction held open across the swap, committed last
            with store_dump.staged(store_url(), manifest, stage) as store:
                removed = _swap(rb, target, stage, staged, ours)
                _commit_store(store, target)
        except store_dump.StoreRestoreError as exc:
            raise RestoreFailed(f"{exc}; nothing was changed") from None
        finally:
            _drop(rb, [name for name, _, _ in staged] + [ours + b"!marker"])
            shutil.rmtree(stage, ignore_errors=True)
    return {"archive": str(archive), "created_at": manifest.get("created_at"), "keys": len(staged),
            "removed_keys": removed, "sessions": manifest["sessions"]["ids"], "sessions_dir": str(target),
            "store_tables": sorted((manifest.get("store") or {}).get("tables", {}))}


def _commit_store(store: object, target: Path) -> None:
    """Make the staged store live: the last step, after Redis and the sessions directory."""
    try:
        store.commit()
    except Exception as exc:  # noqa: BLE001 - any failure here leaves the same uncertain state
        raise RestoreUncertain(f"Redis and {target} hold the archive's state, but the session store did not "
                               f"commit ({type(exc).__name__}: {exc}); restore again") from exc


def check_stack_stopped(r: redis.Redis) -> None:
    """StackRunning while a `waorch supervisor` beats (its workers would write under the restore)."""
    pid = r.get(SUPERVISOR_HEARTBEAT)
    if pid is not None:
        raise StackRunning(f"a `waorch supervisor` (pid {pid if isinstance(pid, str) else pid.decode()}) "
                           "is running: stop the stack before restoring")


# --- reading and checking -------------------------------------------------------------------------

def _read_archive(archive: Path, stage: Path) -> dict:
    """Stream every member into `stage`, then check it all against the manifest."""
    got: dict[str, dict] = {}
    dirs: dict[str, int] = {}
    manifest_data: bytes | None = None
    try:
        handle = open(archive, "rb")  # noqa: SIM115  (closed below)
    except OSError as exc:
        raise ArchiveRefused(f"cannot open {archive}: {exc.strerror or exc}") from exc
    try:
        with handle, gzip.GzipFile(fileobj=handle, mode="rb") as gz, \
                tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                name = _safe_name(member.name)
                if name in got or name in dirs or (name == MANIFEST and manifest_data is not None):
                    raise ArchiveRefused(f"{name} appears twice in the archive")
                if member.isdir():
                    if name in (MANIFEST, REDIS_MEMBER):
                        raise ArchiveRefused(f"{name} must be a file")
                    (stage / name).mkdir(parents=True, exist_ok=True, mode=0o700)
                    dirs[name] = member.mode & 0o777
                elif not member.isfile():
                    raise ArchiveRefused(f"{name} is a link or special file; a backup holds only "
                                         "regular files and directories")
                elif name == MANIFEST:
                    if member.size > _MANIFEST_MAX:
                        raise ArchiveRefused("manifest.json is implausibly large")
                    manifest_data = tar.extractfile(member).read()
                else:
                    got[name] = _stage_file(tar.extractfile(member), stage / name, member.mode)
            # tarfile ends quietly at a damaged header after the first member: reading the stream
            # to its end makes gzip check its CRC and length, so damage is named as such
            while gz.read(1 << 20):
                pass
    except ArchiveRefused:
        raise
    except OSError as exc:
        if exc.errno is not None:  # our own writes (disk full, permissions), not the archive's bytes
            raise RestoreFailed(f"cannot stage the archive in {stage.parent}: {exc}") from exc
        raise ArchiveRefused(f"{archive} is not a readable, complete tar.gz ({exc})") from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveRefused(f"{archive} is not a readable, complete tar.gz ({exc})") from exc
    if manifest_data is None:
        raise ArchiveRefused(f"{archive} has no manifest.json: not a waorch backup, or cut short")
    manifest = _parse_manifest(manifest_data)
    _compare(manifest, got, dirs)
    for name, mode in sorted(dirs.items(), reverse=True):
        os.chmod(stage / name, mode | 0o700)  # the owner keeps rwx so the directory stays manageable
    return manifest


def _safe_name(name: str) -> str:
    """Relative, no `..`, inside the archive's own layout: nothing can land outside the stage."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise ArchiveRefused(f"unsafe member name {name!r} (absolute, empty or with `..`)")
    if name not in (MANIFEST, "redis", REDIS_MEMBER, SESSIONS) and \
            parts[0] not in (SESSIONS, store_dump.STORE):
        raise ArchiveRefused(f"unexpected member {name!r}: not part of a waorch backup")
    return name


def _stage_file(source: IO[bytes] | None, path: Path, mode: int) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "xb") as out:
        digest, size = copy_hashing(source, out)
    os.chmod(path, (mode & 0o777) | 0o600)
    return {"sha256": digest, "size": size}


def _parse_manifest(data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArchiveRefused(f"manifest.json is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveRefused("manifest.json is not a waorch backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveRefused(f"backup format {manifest.get('format_version')!r} is not supported "
                             f"(this waorch reads format {FORMAT_VERSION})")
    files, dirs = manifest.get("files"), manifest.get("dirs")
    valid = (isinstance(files, dict) and isinstance(dirs, list)
             and all(isinstance(d, str) for d in dirs)
             and all(isinstance(v, dict) and isinstance(v.get("sha256"), str)
                     and _SHA256.match(v["sha256"]) and type(v.get("size")) is int for v in files.values())
             and isinstance(manifest.get("redis"), dict) and type(manifest["redis"].get("keys")) is int
             and isinstance(manifest.get("sessions"), dict)
             and isinstance(manifest["sessions"].get("ids"), list))
    if not valid:
        raise ArchiveRefused("manifest.json lacks files, dirs, redis.keys or sessions.ids")
    try:
        store_dump.check_manifest(manifest)
    except ValueError as exc:
        raise ArchiveRefused(str(exc)) from None
    return manifest


def _compare(manifest: dict, got: dict[str, dict], dirs: dict[str, int]) -> None:
    listed = manifest["files"]
    missing, extra = sorted(set(listed) - set(got)), sorted(set(got) - set(listed))
    if missing:
        raise ArchiveRefused(f"files listed in the manifest are missing: {', '.join(missing[:5])}")
    if extra:
        raise ArchiveRefused(f"files not listed in the manifest: {', '.join(extra[:5])}")
    bad = [n for n in sorted(got) if got[n] != {"sha256": listed[n]["sha256"], "size": listed[n]["size"]}]
    if bad:
        raise ArchiveRefused(f"checksum mismatch (corrupt or altered): {', '.join(bad[:5])}")
    if set(manifest["dirs"]) != set(dirs):
        raise ArchiveRefused("the archive's directories differ from the manifest's")
    if REDIS_MEMBER not in got:
        raise ArchiveRefused(f"the archive has no {REDIS_MEMBER}")


def _records(path: Path, manifest: dict) -> Iterator[tuple[bytes, int, bytes]]:
    """(key, pttl, DUMP payload) per line; refuses malformed lines, duplicates and a wrong count."""
    seen: set[bytes] = set()
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                item = json.loads(line)
                key = base64.b64decode(item["key"], validate=True)
                payload = base64.b64decode(item["dump"], validate=True)
                pttl = item["pttl"]
                if type(pttl) is not int or (pttl < 1 and pttl != -1) or not key or not payload:
                    raise ValueError("bad pttl, key or dump")
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise ArchiveRefused(f"{REDIS_MEMBER} line {number} is malformed ({exc})") from exc
            if key in seen or is_skipped_key(key):
                raise ArchiveRefused(f"{REDIS_MEMBER} line {number}: key {key!r} twice or not allowed")
            seen.add(key)
            yield key, pttl, payload
    if len(seen) != manifest["redis"]["keys"]:
        raise ArchiveRefused(f"{REDIS_MEMBER} holds {len(seen)} keys, the manifest says "
                             f"{manifest['redis']['keys']}")


# --- changing things --------------------------------------------------------------------------

def _check_no_eviction(rb: redis.Redis) -> None:
    """Staged keys have no TTL; only an allkeys-* policy could evict one before the final RENAME."""
    info = rb.info("memory")
    policy = as_text(info.get("maxmemory_policy", "noeviction"))
    if int(info.get("maxmemory", 0) or 0) and policy.startswith("allkeys"):
        raise RestoreFailed(f"this Redis may evict any key (maxmemory-policy {policy}), staged ones "
                            "too: set noeviction (Celery's broker needs it anyway) and restore again")


def _stage_keys(rb: redis.Redis, records: Iterator[tuple[bytes, int, bytes]], ours: bytes,
                manifest: dict) -> list[tuple[bytes, bytes, int]]:
    """RESTORE every key under our staging prefix (no TTL yet, so none can expire while staged)."""
    staged: list[tuple[bytes, bytes, int]] = []
    pipe = rb.pipeline(transaction=False)
    try:
        for key, pttl, payload in records:
            staged.append((ours + b":" + key, key, pttl))
            pipe.restore(staged[-1][0], 0, payload, replace=True)
            if len(pipe) >= _BATCH:
                pipe.execute()
        pipe.execute()
    except redis.ResponseError as exc:
        _drop(rb, [name for name, _, _ in staged])
        raise RestoreFailed(
            f"Redis refused a key of the archive ({exc}); the backup was made with Redis "
            f"{manifest['redis'].get('version', '?')}, this one is {rb.info('server')['redis_version']}"
        ) from exc
    except BaseException:
        _drop(rb, [name for name, _, _ in staged])
        raise
    return staged


def _swap(rb: redis.Redis, target: Path, stage: Path, staged: list[tuple[bytes, bytes, int]],
          ours: bytes) -> int | None:
    """Sessions directory by two renames, Redis by one transaction; undo the renames if Redis
    did not take the new state. Returns how many old keys were deleted."""
    marker = ours + b"!marker"  # deleted by the transaction: tells whether it went through
    rb.set(marker, b"1")
    fresh = stage / SESSIONS
    fresh.mkdir(exist_ok=True, mode=0o700)
    previous = target.with_name(f".{target.name}.before-restore-{ours[-16:].decode()}")
    had_previous = target.exists()
    moved_out = moved_in = False
    try:
        if had_previous:
            os.rename(target, previous)
            moved_out = True
        os.rename(fresh, target)
        moved_in = True
        removed = _replace_keys(rb, staged, ours, marker)
    except BaseException as exc:
        applied = _transaction_applied(rb, marker) if moved_in else False
        if applied is None:
            raise RestoreUncertain(
                f"lost Redis while replacing the keys ({exc}): cannot tell whether it took the new state. "
                f"{target} holds the archive's sessions"
                + (f", the previous ones are kept in {previous}" if had_previous else "")) from exc
        if not applied:
            if moved_in:
                os.rename(target, fresh)
            if moved_out:
                os.rename(previous, target)
            raise RestoreFailed(f"restore failed and was rolled back: {exc}") from exc
        removed = None  # the transaction went through; only its answer was lost
    if had_previous:
        shutil.rmtree(previous, ignore_errors=True)
    return removed


def _replace_keys(rb: redis.Redis, staged: list[tuple[bytes, bytes, int]], ours: bytes,
                  marker: bytes) -> int:
    doomed = [k for k in rb.scan_iter(count=1000) if not k.startswith(ours) and k not in LIVE_KEYS]
    with rb.pipeline(transaction=True) as pipe:
        for i in range(0, len(doomed), _BATCH):
            pipe.unlink(*doomed[i:i + _BATCH])
        for name, key, pttl in staged:
            pipe.rename(name, key)
            if pttl > 0:
                pipe.pexpire(key, pttl)
        pipe.delete(marker)
        pipe.execute()
    return len(doomed)


def _transaction_applied(rb: redis.Redis, marker: bytes) -> bool | None:
    try:
        return not rb.exists(marker)
    except redis.RedisError:
        return None


def _drop(rb: redis.Redis, names: list[bytes]) -> None:
    try:
        for i in range(0, len(names), _BATCH):
            rb.unlink(*names[i:i + _BATCH])
    except redis.RedisError:
        pass  # leftovers carry the staging prefix: never backed up, deleted by the next restore
