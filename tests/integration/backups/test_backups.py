"""Backups against a real Redis and real directories: the round trip gives back the same state,
and a corrupt or unsafe archive is refused with Redis and the sessions directory untouched."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import tarfile

import pytest
import redis

from tests.support.backup_support import (
    binary,
    dir_snapshot,
    leftovers,
    populate,
    redis_snapshot,
    rewrite,
    same_redis,
    same_state_after,
    use_dirs,
)
from waorch.backups import create as backups
from waorch.backups import restore as backup_restore
from waorch.core import keys, settings
from waorch.runners.process import HEARTBEAT, LOCK


@pytest.fixture
def root(monkeypatch, tmp_path, redis_url):
    root = use_dirs(monkeypatch, tmp_path)
    populate(redis_url, root)
    return root


@pytest.fixture
def archive(r, root):
    return backups.create_backup(r)


def change_live_state(redis_url, root):
    """Make the live state differ from the archive everywhere a half restore would show."""
    rb = binary(redis_url)
    rb.hset("session:s1", "status", "banned")
    rb.delete("messages:all")
    rb.set("only-live", "x")
    rb.close()
    (root / "s1" / "creds.json").write_text("changed")
    shutil.rmtree(root / "s2")
    (root / "s3").mkdir()
    (root / "s3" / "new.txt").write_text("new")


def test_round_trip_gives_back_the_same_state(r, redis_url, root):
    before_redis, before_dirs = redis_snapshot(redis_url), dir_snapshot(root)
    archive = backups.create_backup(r)
    assert archive.parent == backups.backup_dir() and archive.name.startswith("waorch-backup-")
    assert archive.stat().st_mode & 0o777 == 0o600  # it holds secrets
    manifest = backup_restore.verify_archive(archive)
    assert manifest["redis"]["keys"] == len(before_redis)
    assert manifest["sessions"]["ids"] == ["s1", "s2"]
    assert manifest["files"]["sessions/s1/creds.json"]["sha256"] == hashlib.sha256(
        (root / "s1" / "creds.json").read_bytes()).hexdigest()

    # wipe everything; a live lock and keys made after the backup are there at restore time
    r.flushall()
    shutil.rmtree(root)
    r.set(LOCK, "a supervisor's token", ex=30)
    r.set("made-after-the-backup", "1")
    result = backup_restore.restore_backup(r, archive)

    assert result["keys"] == len(before_redis) and result["sessions"] == ["s1", "s2"]
    after = redis_snapshot(redis_url)
    assert after.pop(LOCK.encode())[0] == b"string"  # live locks are neither saved nor touched
    same_redis(before_redis, after)
    assert dir_snapshot(root) == before_dirs
    assert leftovers(redis_url, root) == []


def test_restore_over_a_changed_state_replaces_it(r, redis_url, root):
    with same_state_after(redis_url, root):
        archive = backups.create_backup(r)
        change_live_state(redis_url, root)
        backup_restore.restore_backup(r, archive)


def _truncate(good, bad):
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])


def _cut_tail(good, bad):
    bad.write_bytes(good.read_bytes()[:-64])


def _flip_byte(good, bad):
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))


def _not_a_tar(good, bad):
    bad.write_text("this is not an archive\n")


def _gzip_not_tar(good, bad):
    bad.write_bytes(gzip.compress(b"hello, not a tar"))


def _empty(good, bad):
    bad.write_bytes(b"")


def _altered_member(good, bad):
    def change(members):
        return [(i, b"tampered" if i.name == "sessions/s1/creds.json" else d) for i, d in members]
    rewrite(good, bad, change)


def _manifest_checksum(good, bad):
    def change(members):
        out = []
        for info, data in members:
            if info.name == "manifest.json":
                manifest = json.loads(data)
                manifest["files"]["sessions/s2/journal.jsonl"]["sha256"] = "0" * 64
                data = json.dumps(manifest).encode()
            out.append((info, data))
        return out
    rewrite(good, bad, change)


def _no_manifest(good, bad):
    rewrite(good, bad, lambda members: [(i, d) for i, d in members if i.name != "manifest.json"])


def _with_member(name, data=b"evil", listed=True, kind=tarfile.REGTYPE, linkname=""):
    """An extra member, listed in the manifest with its right checksum unless `listed` is False."""
    def make(good, bad):
        def change(members):
            extra = tarfile.TarInfo(name)
            extra.type, extra.linkname = kind, linkname
            out = []
            for info, content in members:
                if info.name == "manifest.json" and listed and kind == tarfile.REGTYPE:
                    manifest = json.loads(content)
                    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    content = json.dumps(manifest).encode()
                    out.append((extra, data))
                out.append((info, content))
            if kind != tarfile.REGTYPE:
                out.insert(0, (extra, None))
            elif not listed:
                out.insert(0, (extra, data))
            return out
        rewrite(good, bad, change)
    return make


def _future_format(good, bad):
    def change(members):
        return [(i, json.dumps({**json.loads(d), "format_version": 99}).encode()
                 if i.name == "manifest.json" else d) for i, d in members]
    rewrite(good, bad, change)


REFUSED = {  # how the archive is damaged -> what the refusal must say
    "truncated": (_truncate, "not a readable, complete tar.gz"),
    "cut-tail": (_cut_tail, "not a readable, complete tar.gz"),
    "flipped-byte": (_flip_byte, "checksum mismatch|not a readable"),
    "not-a-tar": (_not_a_tar, "not a readable, complete tar.gz"),
    "gzip-not-tar": (_gzip_not_tar, "not a readable, complete tar.gz"),
    "empty-file": (_empty, "not a readable, complete tar.gz"),
    "altered-member": (_altered_member, "checksum mismatch.*sessions/s1/creds.json"),
    "manifest-checksum": (_manifest_checksum, "checksum mismatch.*sessions/s2/journal.jsonl"),
    "no-manifest": (_no_manifest, "no manifest.json"),
    "dotdot": (_with_member("sessions/../../escape.txt"), "unsafe member name"),
    "absolute": (_with_member("/tmp/waorch-backup-test-escape.txt"), "unsafe member name"),
    "unknown-top-level": (_with_member("etc/cron.d/evil"), "not part of a waorch backup"),
    "symlink-out": (_with_member("sessions/s1/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
                    "link or special file"),
    "hardlink": (_with_member("sessions/s1/hard", kind=tarfile.LNKTYPE, linkname="manifest.json"),
                 "link or special file"),
    "unlisted-member": (_with_member("sessions/s1/extra.txt", listed=False), "not listed in the manifest"),
    "future-format": (_future_format, "format 99 is not supported"),
}


@pytest.mark.parametrize("corruption", list(REFUSED))
def test_a_bad_archive_is_refused_and_nothing_changes(r, redis_url, root, archive, tmp_path, corruption):
    bad = tmp_path / f"bad-{corruption}.tar.gz"
    damage, says = REFUSED[corruption]
    damage(archive, bad)
    change_live_state(redis_url, root)
    with same_state_after(redis_url, root):
        with pytest.raises(backups.ArchiveRefused, match=says):
            backup_restore.verify_archive(bad)
        with pytest.raises(backups.ArchiveRefused, match=says):
            backup_restore.restore_backup(r, bad)
    assert not (tmp_path / "escape.txt").exists() and not (root.parent / "escape.txt").exists()
    assert not os.path.exists("/tmp/waorch-backup-test-escape.txt")
    assert not r.exists(keys.BACKUP_LOCK)


def test_a_missing_archive_is_refused(r, root, tmp_path):
    with pytest.raises(backups.ArchiveRefused, match="cannot open"):
        backup_restore.restore_backup(r, tmp_path / "nope.tar.gz")


def test_a_payload_redis_refuses_rolls_back(r, redis_url, root, archive, tmp_path):
    """Checksums fine, but one DUMP payload is damaged: Redis refuses it while staging."""
    def change(members):
        out = []
        for info, data in members:
            if info.name == "redis/keys.jsonl":
                lines = data.splitlines()
                item = json.loads(lines[0])
                payload = bytearray(base64.b64decode(item["dump"]))
                payload[0] ^= 0x55
                item["dump"] = base64.b64encode(bytes(payload)).decode()
                lines[0] = json.dumps(item).encode()
                data = b"\n".join(lines) + b"\n"
                digest = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            out.append((info, data))
        manifest_at = next(i for i, (info, _) in enumerate(out) if info.name == "manifest.json")
        manifest = json.loads(out[manifest_at][1])
        manifest["files"]["redis/keys.jsonl"] = digest
        out[manifest_at] = (out[manifest_at][0], json.dumps(manifest).encode())
        return out

    bad = rewrite(archive, tmp_path / "bad-payload.tar.gz", change)
    change_live_state(redis_url, root)
    with same_state_after(redis_url, root), pytest.raises(backups.RestoreFailed, match="refused a key"):
        backup_restore.restore_backup(r, bad)


def test_losing_redis_before_the_final_transaction_rolls_back(r, redis_url, root, archive, monkeypatch):
    """Fault injection: Redis drops the connection at the last step, after the directory swap."""
    def lost(*args, **kwargs):
        raise redis.ConnectionError("connection lost (injected)")

    monkeypatch.setattr(backup_restore, "_replace_keys", lost)
    change_live_state(redis_url, root)
    with same_state_after(redis_url, root), pytest.raises(backups.RestoreFailed, match="rolled back"):
        backup_restore.restore_backup(r, archive)


def test_a_lost_answer_after_the_transaction_went_through_completes(r, redis_url, root, monkeypatch):
    real = backup_restore._replace_keys

    def answer_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise redis.ConnectionError("reply lost (injected)")

    with same_state_after(redis_url, root):
        archive = backups.create_backup(r)
        monkeypatch.setattr(backup_restore, "_replace_keys", answer_lost)
        change_live_state(redis_url, root)
        result = backup_restore.restore_backup(r, archive)
    assert result["removed_keys"] is None


def test_restore_refuses_while_a_supervisor_runs(r, redis_url, root, archive):
    r.set(HEARTBEAT, "4242", ex=30)
    change_live_state(redis_url, root)
    with same_state_after(redis_url, root), pytest.raises(backups.StackRunning, match="4242"):
        backup_restore.restore_backup(r, archive)


def test_one_backup_or_restore_at_a_time(r, root, archive):
    r.set(keys.BACKUP_LOCK, "backup pid=1 other", ex=30)
    with pytest.raises(backups.BackupBusy, match="pid=1"):
        backups.create_backup(r)
    with pytest.raises(backups.BackupBusy):
        backup_restore.restore_backup(r, archive)
    assert backups.list_backups(archive.parent) == [archive]


def test_keep_n_prunes_the_oldest_and_nothing_else(r, root):
    out = backups.backup_dir()
    out.mkdir(parents=True)
    old = [out / f"waorch-backup-2020010{d}T030000Z.tar.gz" for d in range(1, 5)]
    for path in old:
        path.write_bytes(b"old")
    (out / "waorch-backup-20200103T030000Z-1.tar.gz").write_bytes(b"same second, later")
    unrelated = out / "notes.txt"
    unrelated.write_text("mine")
    newest = backups.create_backup(r, keep=3)
    assert [p.name for p in backups.list_backups(out)] == [
        "waorch-backup-20200103T030000Z-1.tar.gz", old[3].name, newest.name]
    assert unrelated.exists()


def test_backups_in_the_same_second_get_distinct_names(r, root):
    first, second = backups.create_backup(r), backups.create_backup(r)
    assert first != second and first.exists() and second.exists()
    assert backup_restore.verify_archive(second)["redis"]["keys"] > 0


def test_a_failed_backup_leaves_no_file_and_no_lock(r, root, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk on fire (injected)")

    monkeypatch.setattr(backups, "_add_sessions", broken)
    with pytest.raises(OSError, match="disk on fire"):
        backups.create_backup(r)
    assert list(backups.backup_dir().iterdir()) == []
    assert not r.exists(keys.BACKUP_LOCK)


def test_links_in_a_session_directory_are_skipped(r, root, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not session data")
    (root / "s1" / "link").symlink_to(outside)
    (root / "s1" / "dirlink").symlink_to(tmp_path)
    manifest = backup_restore.verify_archive(backups.create_backup(r))
    assert sorted(manifest["sessions"]["skipped"]) == ["sessions/s1/dirlink", "sessions/s1/link"]
    assert not any("outside" in name for name in manifest["files"])


def test_schedule_time_is_validated():
    assert settings.daily_time("03:00") == (3, 0)
    assert settings.daily_time(" 7:45 ") == (7, 45)
    assert settings.daily_time("") is None
    for bad in ("24:00", "3", "03:60", "noon", "03:00:00"):
        with pytest.raises(ValueError, match="WAORCH_BACKUP_AT"):
            settings.daily_time(bad)


def test_restore_refuses_a_redis_that_may_evict_staged_keys(r, redis_url, root, archive):
    change_live_state(redis_url, root)
    with same_state_after(redis_url, root):
        r.config_set("maxmemory", str(1 << 30))
        r.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with pytest.raises(backups.RestoreFailed, match="noeviction"):
                backup_restore.restore_backup(r, archive)
        finally:
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", "0")
